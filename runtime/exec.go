package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/spec"
)

// ExecOptions describe a process to run in a running container.
type ExecOptions struct {
	Args []string
	Env  []string
	Cwd  string
	User string
	// TTY gives the process a terminal; Stdout then receives everything
	// and Stderr is unused.
	TTY    bool
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Exec runs a process in the container, as `docker exec`, and returns its
// exit code. The container's init starts it, so it shares every namespace,
// the cgroup and the reduced privileges of the container's command.
func (r *Runtime) Exec(ctx context.Context, ref string, o ExecOptions) (int, error) {
	c, err := r.lookup(ref)
	if err != nil {
		return -1, err
	}
	c.mu.Lock()
	running, name := c.c.State == Running, c.c.Name
	c.mu.Unlock()
	if !running {
		return -1, fmt.Errorf("%w: container %s is not running", ErrNotRunning, name)
	}
	if len(o.Args) == 0 {
		return -1, fmt.Errorf("%w: exec needs a command", ErrInvalid)
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: r.execSocket(c.c.ID), Net: "unixpacket"})
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", name, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	req, _ := json.Marshal(spec.ExecRequest{Args: o.Args, Env: o.Env, Cwd: o.Cwd, User: o.User, TTY: o.TTY})
	var copies sync.WaitGroup
	var oob []byte
	if !o.TTY {
		files, closeAfterSend, err := execStdio(o, &copies)
		if err != nil {
			return -1, err
		}
		oob = unix.UnixRights(int(files[0].Fd()), int(files[1].Fd()), int(files[2].Fd()))
		_, _, err = conn.WriteMsgUnix(req, oob, nil)
		for _, f := range closeAfterSend {
			f.Close()
		}
		if err != nil {
			return -1, fmt.Errorf("exec in %s: %w", name, err)
		}
	} else if _, _, err := conn.WriteMsgUnix(req, nil, nil); err != nil {
		return -1, fmt.Errorf("exec in %s: %w", name, err)
	}

	first, master, err := readExecReply(conn)
	if err != nil {
		return -1, fmt.Errorf("exec in %s: %w", name, err)
	}
	if first.Error != "" {
		return -1, fmt.Errorf("exec in %s: %s", name, first.Error)
	}
	if master != nil {
		defer master.Close()
		copies.Add(1)
		go func() { defer copies.Done(); _, _ = io.Copy(writerOrDiscard(o.Stdout), master) }()
		if o.Stdin != nil {
			go func() { _, _ = io.Copy(master, o.Stdin) }()
		}
	}
	last, _, err := readExecReply(conn)
	if err != nil {
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		return -1, fmt.Errorf("exec in %s: %w", name, err)
	}
	if master != nil {
		// Once the process is gone and nothing else holds the slave side,
		// reading the master returns what is still buffered and then EIO:
		// closing it now would drop that output. A child left behind that
		// keeps the terminal open gets a moment, then the master closes.
		drained := make(chan struct{})
		go func() { copies.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(ttyDrainTimeout):
			master.Close()
		}
	}
	copies.Wait()
	if last.Exit == nil {
		return -1, fmt.Errorf("exec in %s: no exit status", name)
	}
	return last.Exit.Code, nil
}

// ttyDrainTimeout bounds the wait for a terminal's last output after the
// exec'd process exited.
const ttyDrainTimeout = 2 * time.Second

// readExecReply reads one reply. The socket is SOCK_SEQPACKET, so each
// read is exactly one reply with the descriptor (if any) that came with it.
func readExecReply(conn *net.UnixConn) (spec.ExecReply, *os.File, error) {
	var rep spec.ExecReply
	var master *os.File
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return rep, nil, err
	}
	if n == 0 {
		return rep, nil, io.ErrUnexpectedEOF
	}
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if fds, err := unix.ParseUnixRights(&m); err == nil && len(fds) > 0 {
				master = os.NewFile(uintptr(fds[0]), "pty-master")
			}
		}
	}
	if err := json.Unmarshal(buf[:n], &rep); err != nil {
		return rep, master, fmt.Errorf("bad reply from init: %w", err)
	}
	return rep, master, nil
}

func writerOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// execStdio gives the process three descriptors: a caller's *os.File is
// passed as is, other readers and writers through pipes copied here.
func execStdio(o ExecOptions, copies *sync.WaitGroup) ([3]*os.File, []*os.File, error) {
	var files [3]*os.File
	var toClose []*os.File
	fail := func(err error) ([3]*os.File, []*os.File, error) {
		for _, f := range toClose {
			f.Close()
		}
		return files, nil, err
	}
	// stdin
	switch in := o.Stdin.(type) {
	case nil:
		f, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		files[0] = f
		toClose = append(toClose, f)
	case *os.File:
		files[0] = in
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		files[0] = pr
		toClose = append(toClose, pr)
		go func() { _, _ = io.Copy(pw, in); pw.Close() }()
	}
	for i, w := range []io.Writer{o.Stdout, o.Stderr} {
		if i == 1 && o.Stderr != nil && o.Stderr == o.Stdout {
			// One writer for both streams: one pipe, so that the two
			// are not copied into it concurrently.
			files[2] = files[1]
			break
		}
		switch out := w.(type) {
		case nil:
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				return fail(err)
			}
			files[i+1] = f
			toClose = append(toClose, f)
		case *os.File:
			files[i+1] = out
		default:
			pr, pw, err := os.Pipe()
			if err != nil {
				return fail(err)
			}
			files[i+1] = pw
			toClose = append(toClose, pw)
			copies.Add(1)
			go func() { defer copies.Done(); _, _ = io.Copy(out, pr); pr.Close() }()
		}
	}
	return files, toClose, nil
}
