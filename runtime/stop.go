package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/cgroups"
)

// DefaultStopTimeout is how long Stop waits after the stop signal before
// it kills, as Docker's default.
const DefaultStopTimeout = 10 * time.Second

// ParseSignal accepts "SIGTERM", "TERM", "term" or "15".
func ParseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("%w: invalid signal %q", ErrInvalid, s)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("%w: invalid signal %q (expected a name like SIGTERM or a number)", ErrInvalid, s)
}

// Kill sends sig to the container's command (through its init, which
// forwards everything but SIGKILL; SIGKILL ends the whole container).
func (r *Runtime) Kill(ref string, sig unix.Signal) error {
	c, err := r.lookup(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c.State != Running {
		return fmt.Errorf("%w: container %s is not running", ErrNotRunning, c.c.Name)
	}
	if err := unix.Kill(c.c.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill container %s: %w", c.c.Name, err)
	}
	return nil
}

// Stop sends the stop signal and, if the container still runs after
// timeout (nil: the spec's stop timeout, or 10 s), kills it. Stopping a
// container that is not running is not an error.
func (r *Runtime) Stop(ctx context.Context, ref string, timeout *time.Duration) error {
	c, err := r.lookup(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	state, pid, ch, name := c.c.State, c.c.Pid, c.exited, c.c.Name
	sig, _ := ParseSignal(c.c.StopSignal)
	t := DefaultStopTimeout
	if c.c.Spec.StopTimeout != nil {
		t = *c.c.Spec.StopTimeout
	}
	c.mu.Unlock()
	if timeout != nil {
		t = *timeout
	}
	if state != Running {
		return nil
	}
	if sig == 0 {
		sig = unix.SIGTERM
	}
	if t > 0 {
		_ = unix.Kill(pid, sig)
		timer := time.NewTimer(t)
		defer timer.Stop()
		select {
		case <-ch:
			return nil
		case <-timer.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop container %s: %w", name, ctx.Err())
	}
}

// Remove deletes a container and everything the runtime made for it. A
// running container is refused unless force, which kills it first.
func (r *Runtime) Remove(ctx context.Context, ref string, force bool) error {
	c, err := r.lookup(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running := c.c.State == Running
	name := c.c.Name
	c.mu.Unlock()
	if running {
		if !force {
			return fmt.Errorf("%w: you cannot remove a running container %s. Stop the container before attempting removal or force remove", ErrConflict, name)
		}
		zero := time.Duration(0)
		if err := r.Stop(ctx, c.c.ID, &zero); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// A cgroup left by a crash between start and record, if any.
	if cg, err := cgroups.Load(r.opts.CgroupParent, c.c.ID); err == nil {
		_ = cg.Kill()
		if err := cg.Delete(); err != nil {
			return fmt.Errorf("remove container %s: %w", name, err)
		}
	}
	_ = os.Remove(r.execSocket(c.c.ID))
	// A process of the container that was still leaving (the init's log
	// rotation, say) can add a file while the directory is emptied:
	// empty it again.
	err = os.RemoveAll(c.dir)
	for try := 0; err != nil && errors.Is(err, unix.ENOTEMPTY) && try < 20; try++ {
		time.Sleep(50 * time.Millisecond)
		err = os.RemoveAll(c.dir)
	}
	if err != nil {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	r.mu.Lock()
	delete(r.containers, c.c.ID)
	r.mu.Unlock()
	return nil
}
