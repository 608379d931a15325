// Package exec runs an agent's tasks: a Controller drives one task's
// container through Prepare, Start, Wait and Shutdown, and Do moves a task
// one state forward using it (the shape of swarmkit's agent/exec). The
// agent's worker calls Do in a loop and reports each new status; keeping
// the step pure apart from the controller calls lets every transition be
// tested with a stub controller (package exectest).
package exec

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Controller drives one task's container. Its methods are idempotent
// where the agent may repeat them after a restart: Prepare reuses a
// container that was created but not started, Start does not start again
// a container that already ran, Shutdown and Remove of a missing
// container succeed.
type Controller interface {
	// Prepare resolves the image (a missing one is ErrImageMissing) and
	// creates the container.
	Prepare(ctx context.Context) error
	// Start starts the container and returns once its command runs.
	Start(ctx context.Context) error
	// Wait blocks until the container exits or ctx ends.
	Wait(ctx context.Context) (ExitInfo, error)
	// Shutdown stops the container with the task's stop signal, killing
	// it after its stop grace period (default 10 s).
	Shutdown(ctx context.Context) error
	// Terminate kills the container at once.
	Terminate(ctx context.Context) error
	// Remove deletes the container and what was made for it.
	Remove(ctx context.Context) error
	// Adopt reports whether a container for this task was already started
	// by an earlier agent process; such a task is waited for, not created
	// or started again.
	Adopt() (bool, error)
}

// ContainerStatuser is implemented by controllers that can describe their
// container; Do copies the description into the statuses it returns.
type ContainerStatuser interface {
	ContainerStatus(ctx context.Context) (*typesv1.ContainerStatus, error)
}

// ExitInfo is how a task's container ended.
type ExitInfo struct {
	ExitCode   int
	OOMKilled  bool
	FinishedAt time.Time
}

// Executor makes controllers for tasks and describes the node.
type Executor interface {
	Controller(t *typesv1.Task) (Controller, error)
	Describe() *typesv1.NodeDescription
}

// TaskLister is implemented by executors that can find the tasks whose
// containers exist on the node. After a restart the agent compares them
// with its assignments and removes the containers of tasks that were
// unassigned while it was away. The tasks carry what the containers'
// labels recorded (ID, names, service), enough for Controller.
type TaskLister interface {
	ListTasks(ctx context.Context) ([]*typesv1.Task, error)
}

// Do moves the task one step toward its desired state using the
// controller and returns the new status, which the caller reports and puts
// back on the task before the next call. It returns ErrTaskNoop when
// nothing can happen until the desired state changes, and ErrTaskRetry
// when ctx ended during the step. Failures of the task itself are not
// errors of Do: they are in the returned status (REJECTED before the
// container starts, FAILED after).
func Do(ctx context.Context, t *typesv1.Task, c Controller) (*typesv1.TaskStatus, error) {
	status := &typesv1.TaskStatus{}
	if t.GetStatus() != nil {
		status = proto.Clone(t.GetStatus()).(*typesv1.TaskStatus)
	}
	current := status.State

	noop := func() (*typesv1.TaskStatus, error) { return status, ErrTaskNoop }
	retry := func() (*typesv1.TaskStatus, error) { return status, ErrTaskRetry }
	transition := func(state typesv1.TaskState, msg string) (*typesv1.TaskStatus, error) {
		if state < current {
			panic(fmt.Sprintf("exec: invalid task state transition %v -> %v", current, state))
		}
		status.State, status.Message, status.Err = state, msg, ""
		containerStatus(ctx, c, status)
		return status, nil
	}
	// fail ends the task with err, keeping the message of the last
	// transition as swarmkit does ("started" on a task that exited
	// non-zero). A step cut short by ctx is not the task's failure.
	fail := func(err error) (*typesv1.TaskStatus, error) {
		if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return retry()
		}
		status.Err = err.Error()
		if status.State < typesv1.TaskState_TASK_STATE_STARTING {
			status.State = typesv1.TaskState_TASK_STATE_REJECTED
		} else {
			status.State = typesv1.TaskState_TASK_STATE_FAILED
		}
		containerStatus(ctx, c, status)
		return status, nil
	}

	if t.DesiredState >= typesv1.TaskState_TASK_STATE_SHUTDOWN {
		if status.State >= typesv1.TaskState_TASK_STATE_COMPLETE {
			return noop() // it ended on its own: keep how
		}
		if err := c.Shutdown(ctx); err != nil {
			if ctx.Err() != nil {
				return retry()
			}
			if terr := c.Terminate(ctx); terr != nil {
				return fail(fmt.Errorf("shutdown: %w (kill: %v)", err, terr))
			}
		}
		return transition(typesv1.TaskState_TASK_STATE_SHUTDOWN, "shutdown")
	}

	if status.State > t.DesiredState {
		return noop()
	}

	// These states proceed up to and past the desired state: once the
	// task is being prepared, it goes on until it runs.
	switch status.State {
	case typesv1.TaskState_TASK_STATE_PREPARING:
		if err := c.Prepare(ctx); err != nil {
			return fail(err)
		}
		return transition(typesv1.TaskState_TASK_STATE_STARTING, "starting")
	case typesv1.TaskState_TASK_STATE_STARTING:
		if err := c.Start(ctx); err != nil {
			return fail(err)
		}
		return transition(typesv1.TaskState_TASK_STATE_RUNNING, "started")
	case typesv1.TaskState_TASK_STATE_RUNNING:
		exit, err := c.Wait(ctx)
		if err != nil {
			return fail(err)
		}
		if exit.OOMKilled || exit.ExitCode != 0 {
			ferr := exitError(exit, t.GetSpec().GetResources().GetLimits().GetMemoryBytes())
			status.State, status.Err = typesv1.TaskState_TASK_STATE_FAILED, ferr
			containerStatus(ctx, c, status)
			setExit(status, exit)
			return status, nil
		}
		s, err := transition(typesv1.TaskState_TASK_STATE_COMPLETE, "finished")
		setExit(s, exit)
		return s, err
	}

	// The states before PREPARING wait until the desired state is beyond
	// them, so that a task the manager holds back does not start.
	if status.State >= t.DesiredState {
		return noop()
	}
	switch status.State {
	case typesv1.TaskState_TASK_STATE_NEW, typesv1.TaskState_TASK_STATE_PENDING, typesv1.TaskState_TASK_STATE_ASSIGNED:
		return transition(typesv1.TaskState_TASK_STATE_ACCEPTED, "accepted")
	case typesv1.TaskState_TASK_STATE_ACCEPTED:
		return transition(typesv1.TaskState_TASK_STATE_PREPARING, "preparing")
	}
	return noop()
}

// exitError is the task error of a container that ended badly. Docker
// reports an OOM kill as "non-zero exit (137)"; naming the limit tells the
// user what to raise.
func exitError(e ExitInfo, memoryLimit int64) string {
	if e.OOMKilled {
		if memoryLimit > 0 {
			return "OOM killed (memory limit " + BytesSize(memoryLimit) + ")"
		}
		return "OOM killed"
	}
	return fmt.Sprintf("task: non-zero exit (%d)", e.ExitCode)
}

// containerStatus copies the controller's view of the container, if it
// has one, into status. A failure only costs the detail, so it is ignored.
func containerStatus(ctx context.Context, c Controller, status *typesv1.TaskStatus) {
	cs, ok := c.(ContainerStatuser)
	if !ok {
		return
	}
	if s, err := cs.ContainerStatus(ctx); err == nil && s != nil {
		status.Container = s
	}
}

// setExit records the exit in the status's container part, which Wait
// knows for certain even when the controller cannot describe the
// container any more.
func setExit(status *typesv1.TaskStatus, e ExitInfo) {
	if status.Container == nil {
		status.Container = &typesv1.ContainerStatus{}
	}
	status.Container.ExitCode = int32(e.ExitCode)
	status.Container.OomKilled = e.OOMKilled
	status.Container.Pid = 0
}

// BytesSize formats n in binary units the way Docker's go-units does
// ("50MiB", "1.5GiB"), so that limits in messages read as users wrote them.
func BytesSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatFloat(v, 'g', 4, 64) + units[i]
}
