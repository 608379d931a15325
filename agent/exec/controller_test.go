package exec_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/shoal-dev/shoal/agent/exec"
	"github.com/shoal-dev/shoal/agent/exec/exectest"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

const (
	stNew       = typesv1.TaskState_TASK_STATE_NEW
	stAssigned  = typesv1.TaskState_TASK_STATE_ASSIGNED
	stAccepted  = typesv1.TaskState_TASK_STATE_ACCEPTED
	stPreparing = typesv1.TaskState_TASK_STATE_PREPARING
	stStarting  = typesv1.TaskState_TASK_STATE_STARTING
	stRunning   = typesv1.TaskState_TASK_STATE_RUNNING
	stComplete  = typesv1.TaskState_TASK_STATE_COMPLETE
	stShutdown  = typesv1.TaskState_TASK_STATE_SHUTDOWN
	stFailed    = typesv1.TaskState_TASK_STATE_FAILED
	stRejected  = typesv1.TaskState_TASK_STATE_REJECTED
	stRemove    = typesv1.TaskState_TASK_STATE_REMOVE
)

// task is a fixture: a task in state with the desired state and a memory
// limit (0: none).
func task(state, desired typesv1.TaskState, memory int64) *typesv1.Task {
	return &typesv1.Task{
		Id:           "t1",
		DesiredState: desired,
		Status:       &typesv1.TaskStatus{State: state, Message: "previous"},
		Spec: &typesv1.TaskSpec{
			Container: &typesv1.ContainerSpec{Image: "busybox"},
			Resources: &typesv1.ResourceRequirements{Limits: &typesv1.Resources{MemoryBytes: memory}},
		},
	}
}

var errBoom = errors.New("boom")

func exit(code int, oom bool) func(context.Context) (exec.ExitInfo, error) {
	return func(context.Context) (exec.ExitInfo, error) {
		return exec.ExitInfo{ExitCode: code, OOMKilled: oom}, nil
	}
}

func TestDo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		task    *typesv1.Task
		ctlr    *exectest.Controller
		want    typesv1.TaskState
		msg     string // "" means: unchanged ("previous")
		errText string
		doErr   error
		calls   []string // the controller methods called, once each; no others
		oom     bool
		code    int32
	}{
		{name: "new accepted", task: task(stNew, stRunning, 0), want: stAccepted, msg: "accepted"},
		{name: "assigned accepted", task: task(stAssigned, stRunning, 0), want: stAccepted, msg: "accepted"},
		{name: "accepted preparing", task: task(stAccepted, stRunning, 0), want: stPreparing, msg: "preparing"},
		{name: "prepare", task: task(stPreparing, stRunning, 0), want: stStarting, msg: "starting", calls: []string{"Prepare"}},
		{
			name: "image missing rejected", task: task(stPreparing, stRunning, 0),
			ctlr: &exectest.Controller{PrepareFn: func(context.Context) error { return imageMissing("no such image: nosuch:latest") }},
			want: stRejected, msg: "previous", errText: "no such image: nosuch:latest", calls: []string{"Prepare"},
		},
		{name: "start", task: task(stStarting, stRunning, 0), want: stRunning, msg: "started", calls: []string{"Start"}},
		{
			name: "start fails", task: task(stStarting, stRunning, 0),
			ctlr: &exectest.Controller{StartFn: func(context.Context) error { return errBoom }},
			want: stFailed, msg: "previous", errText: "boom", calls: []string{"Start"},
		},
		{
			name: "exit 0 complete", task: task(stRunning, stRunning, 0),
			ctlr: &exectest.Controller{WaitFn: exit(0, false)},
			want: stComplete, msg: "finished", calls: []string{"Wait"},
		},
		{
			name: "exit 1 failed", task: task(stRunning, stRunning, 0),
			ctlr: &exectest.Controller{WaitFn: exit(1, false)},
			want: stFailed, msg: "previous", errText: "task: non-zero exit (1)", code: 1, calls: []string{"Wait"},
		},
		{
			name: "oom names the limit", task: task(stRunning, stRunning, 50<<20),
			ctlr: &exectest.Controller{WaitFn: exit(137, true)},
			want: stFailed, msg: "previous", errText: "OOM killed (memory limit 50MiB)", oom: true, code: 137, calls: []string{"Wait"},
		},
		{
			name: "oom without limit", task: task(stRunning, stRunning, 0),
			ctlr: &exectest.Controller{WaitFn: exit(137, true)},
			want: stFailed, msg: "previous", errText: "OOM killed", oom: true, code: 137, calls: []string{"Wait"},
		},
		{
			name: "wait error fails", task: task(stRunning, stRunning, 0),
			ctlr: &exectest.Controller{WaitFn: func(context.Context) (exec.ExitInfo, error) { return exec.ExitInfo{}, errBoom }},
			want: stFailed, msg: "previous", errText: "boom", calls: []string{"Wait"},
		},
		{
			name: "wait interrupted retries", task: task(stRunning, stRunning, 0),
			ctlr: &exectest.Controller{WaitFn: func(context.Context) (exec.ExitInfo, error) { return exec.ExitInfo{}, context.Canceled }},
			want: stRunning, msg: "previous", doErr: exec.ErrTaskRetry, calls: []string{"Wait"},
		},
		{name: "shutdown running", task: task(stRunning, stShutdown, 0), want: stShutdown, msg: "shutdown", calls: []string{"Shutdown"}},
		{name: "shutdown before start", task: task(stAssigned, stShutdown, 0), want: stShutdown, msg: "shutdown", calls: []string{"Shutdown"}},
		{name: "remove shuts down", task: task(stRunning, stRemove, 0), want: stShutdown, msg: "shutdown", calls: []string{"Shutdown"}},
		{
			name: "shutdown fails, terminate works", task: task(stRunning, stShutdown, 0),
			ctlr: &exectest.Controller{ShutdownFn: func(context.Context) error { return errBoom }},
			want: stShutdown, msg: "shutdown", calls: []string{"Shutdown", "Terminate"},
		},
		{
			name: "shutdown and terminate fail", task: task(stRunning, stShutdown, 0),
			ctlr: &exectest.Controller{
				ShutdownFn:  func(context.Context) error { return errBoom },
				TerminateFn: func(context.Context) error { return errors.New("still there") },
			},
			want: stFailed, msg: "previous", errText: "shutdown: boom (kill: still there)", calls: []string{"Shutdown", "Terminate"},
		},
		{name: "shutdown keeps failed", task: task(stFailed, stShutdown, 0), want: stFailed, msg: "previous", doErr: exec.ErrTaskNoop},
		{name: "shutdown keeps complete", task: task(stComplete, stShutdown, 0), want: stComplete, msg: "previous", doErr: exec.ErrTaskNoop},
		{name: "ended stays", task: task(stComplete, stRunning, 0), want: stComplete, msg: "previous", doErr: exec.ErrTaskNoop},
		{name: "held back", task: task(stAssigned, stAssigned, 0), want: stAssigned, msg: "previous", doErr: exec.ErrTaskNoop},
		{name: "accepted held back", task: task(stAccepted, stAccepted, 0), want: stAccepted, msg: "previous", doErr: exec.ErrTaskNoop},
		{name: "preparing goes on past desired", task: task(stPreparing, stPreparing, 0), want: stStarting, msg: "starting", calls: []string{"Prepare"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.ctlr
			if c == nil {
				c = &exectest.Controller{}
			}
			before := tc.task.Status.State
			got, err := exec.Do(context.Background(), tc.task, c)
			if !errors.Is(err, tc.doErr) || (tc.doErr == nil && err != nil) {
				t.Fatalf("Do error %v, want %v", err, tc.doErr)
			}
			if got.State != tc.want || got.Message != tc.msg || got.Err != tc.errText {
				t.Errorf("status %v %q err %q, want %v %q err %q", got.State, got.Message, got.Err, tc.want, tc.msg, tc.errText)
			}
			if tc.task.Status.State != before {
				t.Error("Do changed the task it was given")
			}
			for _, m := range []string{"Prepare", "Start", "Wait", "Shutdown", "Terminate", "Remove"} {
				want := 0
				for _, w := range tc.calls {
					if w == m {
						want = 1
					}
				}
				if n := c.Calls(m); n != want {
					t.Errorf("%s called %d times, want %d", m, n, want)
				}
			}
			if tc.oom || tc.code != 0 {
				if got.Container == nil || got.Container.OomKilled != tc.oom || got.Container.ExitCode != tc.code {
					t.Errorf("container status %v, want exit %d oom %v", got.Container, tc.code, tc.oom)
				}
			}
		})
	}
}

// imageMissing is what a controller returns for a missing image: the
// store's message, classified as ErrImageMissing.
func imageMissing(msg string) error {
	return &classified{msg: msg, class: exec.ErrImageMissing}
}

type classified struct {
	msg   string
	class error
}

func (e *classified) Error() string        { return e.msg }
func (e *classified) Is(target error) bool { return target == e.class }

func TestDoCopiesContainerStatus(t *testing.T) {
	c := &exectest.Controller{ContainerStatusFn: func(context.Context) (*typesv1.ContainerStatus, error) {
		return &typesv1.ContainerStatus{ContainerId: "abc", Pid: 42}, nil
	}}
	got, err := exec.Do(context.Background(), task(stStarting, stRunning, 0), c)
	if err != nil {
		t.Fatal(err)
	}
	if got.Container.GetContainerId() != "abc" || got.Container.GetPid() != 42 {
		t.Errorf("container status %v", got.Container)
	}
}

func TestDoCancelledStepRetries(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &exectest.Controller{PrepareFn: func(ctx context.Context) error { return fmt.Errorf("create: %w", ctx.Err()) }}
	got, err := exec.Do(ctx, task(stPreparing, stRunning, 0), c)
	if !errors.Is(err, exec.ErrTaskRetry) || got.State != stPreparing || got.Err != "" {
		t.Errorf("got %v %q, %v; want PREPARING unchanged and ErrTaskRetry", got.State, got.Err, err)
	}
}

func TestBytesSize(t *testing.T) {
	for n, want := range map[int64]string{
		512:             "512B",
		6 << 20:         "6MiB",
		50 << 20:        "50MiB",
		1536 << 20:      "1.5GiB",
		2 << 30:         "2GiB",
		(1 << 20) + 100: "1MiB",
	} {
		if got := exec.BytesSize(n); got != want {
			t.Errorf("BytesSize(%d) = %q, want %q", n, got, want)
		}
	}
}
