package agent_test

import (
	"context"
	"testing"

	"github.com/shoal-dev/shoal/agent/exec"
	"github.com/shoal-dev/shoal/agent/exec/exectest"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

const (
	running  = typesv1.TaskState_TASK_STATE_RUNNING
	shutdown = typesv1.TaskState_TASK_STATE_SHUTDOWN
	failed   = typesv1.TaskState_TASK_STATE_FAILED
	rejected = typesv1.TaskState_TASK_STATE_REJECTED
)

// checkForward fails if the statuses received for a task ever went back.
func checkForward(t *testing.T, d *fakeDispatcher, id string) {
	t.Helper()
	var last typesv1.TaskState
	for _, s := range d.updatesOf(id) {
		if s.State < last {
			t.Errorf("task %s: reported %v after %v", id, s.State, last)
		}
		last = s.State
	}
}

func TestFullSetRunsTasksAndBatchesStatuses(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1), newTask("t2", 2), newTask("t3", 3))
	e := &exectest.Executor{}
	startAgent(t, d, e)
	for _, id := range []string{"t1", "t2", "t3"} {
		waitState(t, d, id, running)
		checkForward(t, d, id)
	}
	// Each task made four transitions (accepted, preparing, starting,
	// running): twelve statuses, sent in fewer calls and entries.
	_, calls, updates := d.counts()
	if calls >= 12 || updates >= 12 {
		t.Errorf("%d UpdateTaskStatus calls carrying %d updates for 12 transitions: not batched", calls, updates)
	}
	for _, id := range []string{"t1", "t2", "t3"} {
		c := e.Get(id)
		if c.Calls("Prepare") != 1 || c.Calls("Start") != 1 {
			t.Errorf("%s: Prepare %d, Start %d; want 1 each", id, c.Calls("Prepare"), c.Calls("Start"))
		}
	}
}

func TestIncrementalRemoveShutsDownAndRemoves(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1))
	e := &exectest.Executor{}
	startAgent(t, d, e)
	waitState(t, d, "t1", running)

	d.push(dispatcherv1.AssignmentChange_ACTION_REMOVE, &typesv1.Task{Id: "t1"})
	c := e.Get("t1")
	eventually(t, "Remove", func() bool { return c.Calls("Remove") == 1 })
	if c.Calls("Shutdown") != 1 {
		t.Errorf("Shutdown called %d times, want 1", c.Calls("Shutdown"))
	}
}

func TestDesiredShutdownStopsThenRemoveRemoves(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1))
	e := &exectest.Executor{}
	startAgent(t, d, e)
	waitState(t, d, "t1", running)

	d.setDesired("t1", shutdown)
	st := waitState(t, d, "t1", shutdown)
	if st.Message != "shutdown" {
		t.Errorf("message %q, want shutdown", st.Message)
	}
	c := e.Get("t1")
	if c.Calls("Shutdown") != 1 || c.Calls("Remove") != 0 {
		t.Errorf("Shutdown %d, Remove %d; want 1, 0 (a shut-down task keeps its container for logs)", c.Calls("Shutdown"), c.Calls("Remove"))
	}

	d.setDesired("t1", typesv1.TaskState_TASK_STATE_REMOVE)
	eventually(t, "Remove", func() bool { return c.Calls("Remove") == 1 })
	if n := len(d.updatesOf("t1")); d.updatesOf("t1")[n-1].State != shutdown {
		t.Errorf("last state %v, want SHUTDOWN", d.updatesOf("t1")[n-1].State)
	}
	checkForward(t, d, "t1")
}

func TestExitedTaskKeepsItsEnd(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1))
	e := &exectest.Executor{NewController: func(tk *typesv1.Task) (*exectest.Controller, error) {
		if tk.Id != "t1" {
			return &exectest.Controller{}, nil
		}
		return &exectest.Controller{WaitFn: func(context.Context) (exec.ExitInfo, error) {
			return exec.ExitInfo{ExitCode: 1}, nil
		}}, nil
	}}
	startAgent(t, d, e)
	st := waitState(t, d, "t1", failed)
	if st.Err != "task: non-zero exit (1)" {
		t.Errorf("err %q", st.Err)
	}
	// Asked to shut down after it ended, the task stays FAILED.
	d.setDesired("t1", shutdown)
	d.dropSession() // and a new session must not report it again
	eventually(t, "second session", func() bool { s, _, _ := d.counts(); return s >= 2 })
	d.push(dispatcherv1.AssignmentChange_ACTION_UPDATE, newTask("t2", 2))
	waitState(t, d, "t2", running)
	if c := e.Get("t1"); c.Calls("Shutdown") != 0 {
		t.Errorf("Shutdown of an ended task called %d times", c.Calls("Shutdown"))
	}
	n := 0
	for _, s := range d.updatesOf("t1") {
		if s.State >= typesv1.TaskState_TASK_STATE_COMPLETE {
			n++
		}
	}
	if n != 1 || d.state("t1").State != failed {
		t.Errorf("terminal state reported %d times, last %v; want once, FAILED", n, d.state("t1").State)
	}
}

func TestSessionDropDoesNotRestartTasks(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1))
	e := &exectest.Executor{}
	startAgent(t, d, e)
	waitState(t, d, "t1", running)

	// The next statuses fail once: they must arrive through a later
	// session.
	d.mu.Lock()
	d.failStatus = 1
	d.mu.Unlock()
	d.dropSession()
	eventually(t, "second session", func() bool { s, _, _ := d.counts(); return s >= 2 })
	d.push(dispatcherv1.AssignmentChange_ACTION_UPDATE, newTask("t2", 2))
	waitState(t, d, "t2", running)
	eventually(t, "a session after the failed status call", func() bool { s, _, _ := d.counts(); return s >= 3 })

	c := e.Get("t1")
	if c.Calls("Prepare") != 1 || c.Calls("Start") != 1 || c.Calls("Shutdown") != 0 || e.Made("t1") != 1 {
		t.Errorf("after reconnects: Prepare %d, Start %d, Shutdown %d, controllers %d; want 1, 1, 0, 1",
			c.Calls("Prepare"), c.Calls("Start"), c.Calls("Shutdown"), e.Made("t1"))
	}
	checkForward(t, d, "t2")
}

func TestAdoptedTaskIsNotStartedAgain(t *testing.T) {
	// After an agent restart the manager still holds the task RUNNING and
	// its container is there.
	tk := newTask("t1", 1)
	tk.Status = &typesv1.TaskStatus{State: running, Message: "started"}
	d := newFakeDispatcher(tk)
	e := &exectest.Executor{NewController: func(*typesv1.Task) (*exectest.Controller, error) {
		return &exectest.Controller{
			AdoptFn: func() (bool, error) { return true, nil },
			ContainerStatusFn: func(context.Context) (*typesv1.ContainerStatus, error) {
				return &typesv1.ContainerStatus{ContainerId: "c1", Pid: 7}, nil
			},
		}, nil
	}}
	startAgent(t, d, e)
	eventually(t, "RUNNING reported", func() bool { return len(d.updatesOf("t1")) > 0 })
	st := d.updatesOf("t1")[0]
	if st.State != running || st.Container.GetContainerId() != "c1" {
		t.Errorf("reported %v %v, want RUNNING with container c1", st.State, st.Container)
	}
	c := e.Get("t1")
	eventually(t, "Wait", func() bool { return c.Calls("Wait") == 1 })
	if c.Calls("Prepare") != 0 || c.Calls("Start") != 0 {
		t.Errorf("Prepare %d, Start %d; want 0 (adopted)", c.Calls("Prepare"), c.Calls("Start"))
	}
}

func TestStartingTaskAdoptedReportsRunning(t *testing.T) {
	// The agent died after starting the container and before RUNNING
	// went out.
	tk := newTask("t1", 1)
	tk.Status = &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_STARTING, Message: "starting"}
	d := newFakeDispatcher(tk)
	e := &exectest.Executor{NewController: func(*typesv1.Task) (*exectest.Controller, error) {
		return &exectest.Controller{AdoptFn: func() (bool, error) { return true, nil }}, nil
	}}
	startAgent(t, d, e)
	st := waitState(t, d, "t1", running)
	if st.Message != "started" {
		t.Errorf("message %q", st.Message)
	}
	if c := e.Get("t1"); c.Calls("Start") != 0 {
		t.Errorf("Start called %d times on an adopted task", c.Calls("Start"))
	}
}

func TestUnassignedContainersAreRemoved(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1))
	e := &exectest.Executor{Tasks: func() []*typesv1.Task {
		return []*typesv1.Task{{Id: "t1"}, {Id: "gone", Annotations: &typesv1.Annotations{Name: "old_web.1"}}}
	}}
	startAgent(t, d, e)
	waitState(t, d, "t1", running)
	eventually(t, "Remove of the unassigned task", func() bool { c := e.Get("gone"); return c != nil && c.Calls("Remove") == 1 })
	if c := e.Get("gone"); c.Calls("Shutdown") != 1 || c.Calls("Start") != 0 {
		t.Errorf("unassigned task: Shutdown %d, Start %d; want 1, 0", c.Calls("Shutdown"), c.Calls("Start"))
	}
	if len(d.updatesOf("gone")) != 0 {
		t.Error("status reported for a task the manager did not assign")
	}
	if c := e.Get("t1"); c.Calls("Remove") != 0 {
		t.Error("assigned task's container removed")
	}
}

func TestControllerErrorRejects(t *testing.T) {
	d := newFakeDispatcher(newTask("t1", 1))
	e := &exectest.Executor{NewController: func(*typesv1.Task) (*exectest.Controller, error) {
		return &exectest.Controller{PrepareFn: func(context.Context) error {
			return &classified{msg: "no such image: nosuch:latest", class: exec.ErrImageMissing}
		}}, nil
	}}
	startAgent(t, d, e)
	st := waitState(t, d, "t1", rejected)
	if st.Err != "no such image: nosuch:latest" {
		t.Errorf("err %q", st.Err)
	}
}

type classified struct {
	msg   string
	class error
}

func (e *classified) Error() string        { return e.msg }
func (e *classified) Is(target error) bool { return target == e.class }
