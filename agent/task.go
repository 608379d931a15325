package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/agent/exec"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Retry delays of a task step that failed without a verdict on the task
// (a Wait cut short by something other than a desired-state change).
const (
	stepRetryMin = 100 * time.Millisecond
	stepRetryMax = 5 * time.Second
	// removeAttempts bounds the tries to remove a container before the
	// runner gives up; the sweep at the next session tries again.
	removeAttempts = 5
)

// taskRunner drives one task: it calls exec.Do until the task ends or
// waits for its desired state to change, reports each new status, and
// removes the container when the task is unassigned.
type taskRunner struct {
	w   *worker
	id  string
	log *slog.Logger

	mu      sync.Mutex
	task    *typesv1.Task // latest version from the dispatcher
	removed bool
	// changed is closed (and replaced) when the desired state changes or
	// the task is removed; it interrupts a Wait and wakes an idle runner.
	changed chan struct{}
	// last is the last status recorded, the floor of any later one: a
	// task's state only moves forward.
	last *typesv1.TaskStatus
}

func newTaskRunner(w *worker, t *typesv1.Task, removed bool) *taskRunner {
	return &taskRunner{
		w:       w,
		id:      t.Id,
		log:     w.log.With("task.id", t.Id, "task.name", t.GetAnnotations().GetName(), "service.name", t.GetServiceAnnotations().GetName()),
		task:    t,
		removed: removed,
		changed: make(chan struct{}),
	}
}

func (r *taskRunner) signal() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// update takes a new version of the task and returns the last status the
// runner recorded (nil if none yet). The manager's copy of the status is
// not taken: the runner's is newer.
func (r *taskRunner) update(t *typesv1.Task) *typesv1.TaskStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return nil
	}
	old := r.task.DesiredState
	r.task = t
	if t.DesiredState != old {
		r.log.Debug("desired state changed", "from", old, "to", t.DesiredState)
		r.signal()
	}
	return r.last
}

func (r *taskRunner) remove() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.removed {
		r.removed = true
		r.signal()
	}
}

func (r *taskRunner) snapshot() (*typesv1.Task, bool, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.task, r.removed, r.changed
}

// record makes s the task's status and queues it for the manager, unless
// it would move the state backward. force reports s even when nothing
// changed (an adopted task's RUNNING, for the new session's view).
func (r *taskRunner) record(s *typesv1.TaskStatus, force bool) {
	r.mu.Lock()
	last := r.last
	if last != nil && s.State < last.State {
		r.mu.Unlock()
		r.log.Warn("not reporting a state older than the last one", "state", s.State, "last", last.State)
		return
	}
	same := last != nil && s.State == last.State && s.Message == last.Message && s.Err == last.Err
	if same && !force {
		r.mu.Unlock()
		return
	}
	if !same || s.Timestamp == nil {
		s.Timestamp = timestamppb.Now()
	}
	r.last = s
	r.mu.Unlock()
	r.log.Info("task status", "state", s.State, "message", s.Message, "err", s.Err)
	r.w.rep.report(r.id, s)
}

func (r *taskRunner) run(ctx context.Context) {
	defer r.w.wg.Done()
	defer r.w.forget(r)

	task, removed, _ := r.snapshot()
	status := cloneStatus(task.GetStatus())
	r.mu.Lock()
	r.last = status // what the manager knows is the floor too
	r.mu.Unlock()

	ctlr, err := r.w.exec.Controller(task)
	if err != nil {
		r.log.Error("no controller for task", "err", err)
		if status.State < typesv1.TaskState_TASK_STATE_COMPLETE && !removed {
			s := cloneStatus(status)
			s.State, s.Err = typesv1.TaskState_TASK_STATE_REJECTED, err.Error()
			r.record(s, false)
		}
		r.idleUntilRemoved(ctx)
		return
	}
	if removed {
		r.teardown(ctx, ctlr, status)
		return
	}
	if status.State < typesv1.TaskState_TASK_STATE_COMPLETE {
		status = r.adopt(ctx, ctlr, status)
	}
	r.loop(ctx, ctlr)
}

// adopt takes over a container an earlier agent process started: the task
// is reported RUNNING and waited for, never started again. The timestamp
// of a RUNNING the manager already has is kept, so that "Running 2 hours
// ago" stays true.
func (r *taskRunner) adopt(ctx context.Context, ctlr exec.Controller, status *typesv1.TaskStatus) *typesv1.TaskStatus {
	ok, err := ctlr.Adopt()
	if err != nil {
		r.log.Warn("look for an existing container", "err", err)
		return status
	}
	if !ok {
		return status
	}
	s := cloneStatus(status)
	if s.State < typesv1.TaskState_TASK_STATE_RUNNING {
		s.State, s.Message, s.Err, s.Timestamp = typesv1.TaskState_TASK_STATE_RUNNING, "started", "", nil
	}
	if cs, ok := ctlr.(exec.ContainerStatuser); ok {
		if c, err := cs.ContainerStatus(ctx); err == nil && c != nil {
			s.Container = c
		}
	}
	r.log.Info("adopted the container an earlier agent started")
	r.record(s, true)
	return s
}

// loop runs the task until it is removed or the agent stops.
func (r *taskRunner) loop(ctx context.Context, ctlr exec.Controller) {
	backoff := stepRetryMin
	containerRemoved := false
	for {
		task, removed, changed := r.snapshot()
		r.mu.Lock()
		status := r.last
		r.mu.Unlock()
		if removed {
			r.teardown(ctx, ctlr, status)
			return
		}
		if status.State >= typesv1.TaskState_TASK_STATE_COMPLETE {
			// Ended. Its container stays (for logs) until the task is
			// removed, or its desired state says remove.
			if task.DesiredState >= typesv1.TaskState_TASK_STATE_REMOVE && !containerRemoved {
				r.removeContainer(ctx, ctlr)
				containerRemoved = true
			}
			if !wait(ctx, changed) {
				return
			}
			continue
		}

		t := proto.Clone(task).(*typesv1.Task)
		t.Status = cloneStatus(status)
		dctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-dctx.Done():
			}
		}()
		next, err := exec.Do(dctx, t, ctlr)
		cancel()
		if ctx.Err() != nil {
			// The agent stops; the container goes on and the next agent
			// adopts it.
			return
		}
		switch {
		case errors.Is(err, exec.ErrTaskNoop):
			if !wait(ctx, changed) {
				return
			}
		case errors.Is(err, exec.ErrTaskRetry):
			select {
			case <-changed: // interrupted on purpose: go again at once
			default:
				if !sleep(ctx, changed, backoff) {
					return
				}
				backoff = min(2*backoff, stepRetryMax)
			}
		case err != nil:
			r.log.Warn("task step", "err", err)
			if !sleep(ctx, changed, backoff) {
				return
			}
			backoff = min(2*backoff, stepRetryMax)
		default:
			backoff = stepRetryMin
			r.record(next, false)
		}
	}
}

// teardown stops and removes the container of a task that is no longer
// assigned. Nothing is reported: the manager has let go of the task.
func (r *taskRunner) teardown(ctx context.Context, ctlr exec.Controller, status *typesv1.TaskStatus) {
	r.log.Info("task removed; removing its container", "state", status.GetState())
	if err := ctlr.Shutdown(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("shutdown", "err", err)
		if err := ctlr.Terminate(ctx); err != nil {
			r.log.Warn("terminate", "err", err)
		}
	}
	r.removeContainer(ctx, ctlr)
}

func (r *taskRunner) removeContainer(ctx context.Context, ctlr exec.Controller) {
	backoff := stepRetryMin
	for i := 0; i < removeAttempts; i++ {
		err := ctlr.Remove(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		r.log.Warn("remove container", "err", err, "attempt", i+1)
		if !sleep(ctx, nil, backoff) {
			return
		}
		backoff = min(2*backoff, stepRetryMax)
	}
}

// idleUntilRemoved waits for the task's removal or the agent's end.
func (r *taskRunner) idleUntilRemoved(ctx context.Context) {
	for {
		_, removed, changed := r.snapshot()
		if removed || !wait(ctx, changed) {
			return
		}
	}
}

// wait blocks until changed is closed (true) or ctx ends (false).
func wait(ctx context.Context, changed <-chan struct{}) bool {
	select {
	case <-changed:
		return true
	case <-ctx.Done():
		return false
	}
}

// sleep waits d, cut short by changed; false if ctx ended.
func sleep(ctx context.Context, changed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-changed:
	case <-ctx.Done():
		return false
	}
	return true
}
