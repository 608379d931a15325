package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/spec"
)

// finish records the end of a container whose init has exited: the exit
// the init wrote (none if it was SIGKILLed), whether the kernel OOM-killed
// something, and then removes the cgroup and the exec socket.
func (r *Runtime) finish(c *ctr, exited chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.exited != exited {
		return // already finished
	}
	e := spec.Exit{Code: 137, Signal: 9, FinishedAt: time.Now().UTC()}
	if b, err := os.ReadFile(filepath.Join(c.dir, spec.ExitFile)); err == nil {
		_ = json.Unmarshal(b, &e)
	}
	c.c.State = Exited
	c.c.Pid, c.c.PidStart = 0, 0
	c.c.ExitCode = e.Code
	c.c.FinishedAt = e.FinishedAt
	if cg, err := cgroups.Load(r.opts.CgroupParent, c.c.ID); err == nil {
		if oom, _ := cg.OOMKilled(); oom {
			c.c.OOMKilled = true
			if c.c.ExitCode == 0 {
				c.c.ExitCode = 137
			}
		}
		// The init was PID 1 of the namespace, so everything in it is gone
		// or going; Kill waits for the stragglers.
		_ = cg.Kill()
		if err := cg.Delete(); err != nil {
			r.log.Warn("remove cgroup", "container.id", c.c.ID, "err", err)
		}
	}
	_ = os.Remove(r.execSocket(c.c.ID))
	if err := c.save(); err != nil {
		r.log.Warn("save container record", "container.id", c.c.ID, "err", err)
	}
	close(exited)
}

// adopt takes over a container found running at Open: its init is no
// longer our child, so its end is watched through a pidfd.
func (r *Runtime) adopt(c *ctr) {
	c.exited = make(chan struct{})
	exited := c.exited
	if c.c.Pid <= 0 || procStartTime(c.c.Pid) != c.c.PidStart {
		go r.finish(c, exited)
		return
	}
	fd, err := unix.PidfdOpen(c.c.Pid, 0)
	if err != nil {
		go r.finish(c, exited)
		return
	}
	r.mu.Lock()
	if r.watcher == nil {
		r.watcher, err = newPidWatcher()
	}
	w := r.watcher
	r.mu.Unlock()
	if err != nil {
		unix.Close(fd)
		r.log.Error("watch adopted containers", "err", err)
		return
	}
	w.add(fd, func() { r.finish(c, exited) })
}

// pidWatcher waits for many pidfds with one epoll instance, so that
// hundreds of adopted containers cost one goroutine, not one thread each.
type pidWatcher struct {
	ep   int
	mu   sync.Mutex
	fns  map[int32]func()
	stop chan struct{}
}

func newPidWatcher() (*pidWatcher, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	w := &pidWatcher{ep: ep, fns: map[int32]func(){}, stop: make(chan struct{})}
	go w.run()
	return w, nil
}

func (w *pidWatcher) add(fd int, fn func()) {
	w.mu.Lock()
	w.fns[int32(fd)] = fn
	w.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(w.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		w.mu.Lock()
		delete(w.fns, int32(fd))
		w.mu.Unlock()
		unix.Close(fd)
		go fn()
	}
}

func (w *pidWatcher) run() {
	evs := make([]unix.EpollEvent, 32)
	for {
		n, err := unix.EpollWait(w.ep, evs, 500)
		select {
		case <-w.stop:
			unix.Close(w.ep)
			return
		default:
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
		for _, ev := range evs[:max(n, 0)] {
			w.mu.Lock()
			fn := w.fns[ev.Fd]
			delete(w.fns, ev.Fd)
			w.mu.Unlock()
			_ = unix.EpollCtl(w.ep, unix.EPOLL_CTL_DEL, int(ev.Fd), nil)
			unix.Close(int(ev.Fd))
			if fn != nil {
				go fn()
			}
		}
	}
}

func (w *pidWatcher) close() {
	close(w.stop)
	w.mu.Lock()
	for fd := range w.fns {
		unix.Close(int(fd))
	}
	w.fns = map[int32]func(){}
	w.mu.Unlock()
	// The run loop closes the epoll descriptor when it sees stop.
}

// Wait blocks until the container is not running and returns how it ended.
func (r *Runtime) Wait(ctx context.Context, ref string) (Exit, error) {
	c, err := r.lookup(ref)
	if err != nil {
		return Exit{}, err
	}
	c.mu.Lock()
	ch, state := c.exited, c.c.State
	c.mu.Unlock()
	if state == Running && ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c.State == Created {
		return Exit{}, fmt.Errorf("%w: container %s was never started", ErrNotRunning, c.c.Name)
	}
	return Exit{Code: c.c.ExitCode, OOMKilled: c.c.OOMKilled, FinishedAt: c.c.FinishedAt}, nil
}
