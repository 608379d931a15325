package pid1

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/spec"
)

// listenUnix binds the exec socket with plain system calls: the net
// package would add a few hundred KiB to every container's init.
func listenUnix(path string) (int, error) {
	_ = os.Remove(path)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// serveExec runs exec requests. The init already lives in every namespace
// of the container and holds its reduced privileges, so a process it forks
// is exactly as confined as the command; no setns dance is needed.
func (p *initProc) serveExec(ln int, env []string, cwd string) {
	for {
		c, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return
		}
		go p.handleExec(c, env, cwd)
	}
}

func sendReply(c int, r spec.ExecReply, fd int) error {
	b, _ := json.Marshal(r)
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	return unix.Sendmsg(c, b, oob, nil, 0)
}

func (p *initProc) handleExec(c int, baseEnv []string, baseCwd string) {
	defer unix.Close(c)
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if r, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, r...)
			}
		}
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	var req spec.ExecRequest
	if err := json.Unmarshal(buf[:n], &req); err != nil {
		_ = sendReply(c, spec.ExecReply{Error: "bad exec request: " + err.Error()}, -1)
		return
	}
	pid, master, wait, err := p.startExec(req, fds, baseEnv, baseCwd)
	// The process has its own copies now; holding ours would keep the
	// client's pipes open after the process ends.
	for _, fd := range fds {
		unix.Close(fd)
	}
	fds = nil
	if err != nil {
		_ = sendReply(c, spec.ExecReply{Error: err.Error()}, -1)
		return
	}
	err = sendReply(c, spec.ExecReply{Pid: pid}, master)
	if master >= 0 {
		unix.Close(master)
	}
	if err != nil {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	st := <-wait
	e := &spec.Exit{FinishedAt: time.Now().UTC()}
	if st.Exited() {
		e.Code = st.ExitStatus()
	} else if st.Signaled() {
		e.Signal = int(st.Signal())
		e.Code = 128 + e.Signal
	}
	_ = sendReply(c, spec.ExecReply{Exit: e}, -1)
}

func (p *initProc) startExec(req spec.ExecRequest, fds []int, baseEnv []string, baseCwd string) (int, int, chan unix.WaitStatus, error) {
	user := req.User
	if user == "" {
		user = p.cfg.User
	}
	cred, home, err := lookupUser(user)
	if err != nil {
		return 0, -1, nil, err
	}
	env := withDefaultEnv(append(append([]string(nil), baseEnv...), req.Env...), home)
	cwd := req.Cwd
	if cwd == "" {
		cwd = baseCwd
	}
	argv0, err := lookPath(req.Args, env)
	if err != nil {
		return 0, -1, nil, err
	}
	sys := &syscall.SysProcAttr{Credential: cred}
	var files []uintptr
	master := -1
	if req.TTY {
		m, slave, err := openPty()
		if err != nil {
			return 0, -1, nil, fmt.Errorf("allocate tty: %w", err)
		}
		defer unix.Close(slave)
		master = m
		files = []uintptr{uintptr(slave), uintptr(slave), uintptr(slave)}
		sys.Setsid, sys.Setctty, sys.Ctty = true, true, 0
	} else {
		if len(fds) != 3 {
			return 0, -1, nil, fmt.Errorf("exec without tty needs 3 descriptors, got %d", len(fds))
		}
		files = []uintptr{uintptr(fds[0]), uintptr(fds[1]), uintptr(fds[2])}
	}
	wait := make(chan unix.WaitStatus, 1)
	p.mu.Lock()
	pid, err := syscall.ForkExec(argv0, req.Args, &syscall.ProcAttr{Dir: cwd, Env: env, Files: files, Sys: sys})
	if err == nil {
		p.waiters[pid] = wait
	}
	p.mu.Unlock()
	if err != nil {
		if master >= 0 {
			unix.Close(master)
		}
		return 0, -1, nil, fmt.Errorf("exec %q: %w", req.Args[0], err)
	}
	return pid, master, wait, nil
}

func openPty() (int, int, error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return -1, -1, err
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		unix.Close(m)
		return -1, -1, err
	}
	s, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(m)
		return -1, -1, err
	}
	return m, s, nil
}
