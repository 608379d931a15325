package pid1

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// notifySignals catches every signal the init can catch. A PID 1 gets no
// default action for signals it does not handle, so without this a SIGTERM
// from the runtime would be dropped instead of reaching the command.
func notifySignals() chan os.Signal {
	c := make(chan os.Signal, 64)
	signal.Notify(c)
	return c
}

// loop forwards signals to the command and reaps children until the
// command itself has exited; it returns the command's wait status.
func (p *initProc) loop(sigs chan os.Signal) unix.WaitStatus {
	for sig := range sigs {
		s := sig.(syscall.Signal)
		switch s {
		case unix.SIGCHLD:
			if st, done := p.reap(); done {
				return st
			}
		case unix.SIGURG, unix.SIGPIPE:
			// SIGURG is the Go runtime's own preemption signal; SIGPIPE
			// concerns the init's own descriptors. Neither is the user's.
		default:
			p.mu.Lock()
			pid := p.mainPid
			p.mu.Unlock()
			_ = unix.Kill(pid, s)
		}
	}
	panic("signal channel closed")
}

// reap collects every exited child. Exec sessions are told of their
// process's end; orphans reparented to us are simply collected, which is
// the zombie reaping a container without an init lacks.
func (p *initProc) reap() (unix.WaitStatus, bool) {
	var mainStatus unix.WaitStatus
	mainDone := false
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(-1, &st, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return mainStatus, mainDone
		}
		p.mu.Lock()
		if pid == p.mainPid {
			mainStatus, mainDone = st, true
		}
		if w, ok := p.waiters[pid]; ok {
			delete(p.waiters, pid)
			w <- st
		}
		p.mu.Unlock()
	}
}

// reapAll waits for every remaining process after the final SIGKILL.
func (p *initProc) reapAll() {
	for {
		var st unix.WaitStatus
		pid, err := unix.Wait4(-1, &st, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		p.mu.Lock()
		if w, ok := p.waiters[pid]; ok {
			delete(p.waiters, pid)
			w <- st
		}
		p.mu.Unlock()
	}
}
