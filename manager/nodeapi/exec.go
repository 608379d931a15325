package nodeapi

import (
	"context"
	"io"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	"github.com/shoal-dev/shoal/runtime"
)

// Exec implements nodev1.NodeServer.
//
// Without a tty the process's stdout and stderr are pipes whose data go
// out as stdout and stderr messages. With a tty the runtime allocates a
// pty and everything the process writes comes as stdout. Resize messages
// are accepted and dropped: the runtime keeps the pty master to itself and
// has no resize hook yet, so the terminal keeps the pty's default size.
func (s *Server) Exec(stream nodev1.Node_ExecServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	o := first.GetOptions()
	switch {
	case o == nil:
		return invalidf("exec: the first message must be the options")
	case o.GetContainer() == "":
		return invalidf("exec: no container given")
	case len(o.GetCmd()) == 0:
		return invalidf("No exec command specified")
	}
	ref := o.GetContainer()
	ro := runtime.ExecOptions{Args: o.GetCmd(), Env: o.GetEnv(), Cwd: o.GetWorkdir(), User: o.GetUser(), TTY: o.GetTty()}
	if o.GetDetach() {
		return s.execDetached(stream, ref, ro)
	}

	out := &execSender{stream: stream}
	ro.Stdout = &execWriter{s: out}
	if !ro.TTY {
		ro.Stderr = &execWriter{s: out, stderr: true}
	}
	if o.GetInteractive() {
		pr, pw := io.Pipe()
		// Closing the read end when Exec returns unblocks a receiver
		// stuck writing stdin that the process never read.
		defer pr.Close()
		ro.Stdin = pr
		go receiveStdin(stream, pw)
	}
	code, err := s.rt.Exec(stream.Context(), ref, ro)
	if err != nil {
		return containerError(err, ref)
	}
	return out.send(&nodev1.ExecResponse{Msg: &nodev1.ExecResponse_Exit{Exit: &nodev1.ExecExit{Code: int32(code)}}})
}

// receiveStdin copies the client's stdin messages into the process's
// stdin until the client closes it (stdin_eof or the end of its stream) or
// the call ends. It runs beside Exec, which only sends: gRPC allows one
// receiver and one sender at a time.
func receiveStdin(stream nodev1.Node_ExecServer, pw *io.PipeWriter) {
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			pw.Close()
			return
		}
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		switch m.GetMsg().(type) {
		case *nodev1.ExecRequest_Stdin:
			if _, err := pw.Write(m.GetStdin()); err != nil {
				// The process closed its stdin, or Exec is over; keep
				// reading so that stdin_eof and resizes are consumed.
				continue
			}
		case *nodev1.ExecRequest_StdinEof:
			pw.Close()
		case *nodev1.ExecRequest_Resize:
			// No runtime hook to resize the pty; see Exec.
		}
	}
}

// execDetached starts the process and answers at once, as `docker exec
// -d`. A missing or stopped container is reported; a failure to start the
// process itself is only logged, because the runtime tells it apart from a
// started process only when the process ends.
func (s *Server) execDetached(stream nodev1.Node_ExecServer, ref string, ro runtime.ExecOptions) error {
	c, err := s.rt.Inspect(ref)
	if err != nil {
		return containerError(err, ref)
	}
	if c.State != runtime.Running {
		return status.Errorf(codes.FailedPrecondition, "container %s is not running", c.ID)
	}
	ro.TTY = false // no one would read the terminal
	go func() {
		// Not the call's context: the process outlives the call.
		code, err := s.rt.Exec(context.Background(), c.ID, ro)
		if err != nil {
			s.log.Warn("detached exec failed", "container.id", c.ID, "exec.cmd", ro.Args, "err", err)
			return
		}
		s.log.Debug("detached exec ended", "container.id", c.ID, "exec.cmd", ro.Args, "exit.code", code)
	}()
	return stream.Send(&nodev1.ExecResponse{Msg: &nodev1.ExecResponse_Exit{Exit: &nodev1.ExecExit{}}})
}

// execSender serialises sends: stdout and stderr are copied by two
// goroutines, and a gRPC stream takes one sender at a time.
type execSender struct {
	mu     sync.Mutex
	stream nodev1.Node_ExecServer
}

func (s *execSender) send(m *nodev1.ExecResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// execWriter sends what the process writes to one of its streams.
type execWriter struct {
	s      *execSender
	stderr bool
}

func (w *execWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		// Send marshals before it returns, so p need not be copied.
		b := p[:min(len(p), chunkSize)]
		m := &nodev1.ExecResponse{Msg: &nodev1.ExecResponse_Stdout{Stdout: b}}
		if w.stderr {
			m.Msg = &nodev1.ExecResponse_Stderr{Stderr: b}
		}
		if err := w.s.send(m); err != nil {
			return 0, err
		}
		p = p[len(b):]
	}
	return n, nil
}
