package exec_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent/exec"
	"github.com/shoal-dev/shoal/agent/exec/exectest"
	"github.com/shoal-dev/shoal/internal/testutil"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/image"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

func runtimeTask(id string, args ...string) *typesv1.Task {
	return &typesv1.Task{
		Id:           id,
		Annotations:  &typesv1.Annotations{Name: "svc.1"},
		DesiredState: typesv1.TaskState_TASK_STATE_RUNNING,
		Spec:         &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: exectest.HelperImage, Args: args}},
	}
}

// TestRuntimeControllerIsIdempotent checks what the agent relies on after
// a restart: a controller made anew finds the container by the task, does
// not create or start it twice, and stopping or removing what is not there
// succeeds.
func TestRuntimeControllerIsIdempotent(t *testing.T) {
	e := exectest.NewRuntimeEnv(t)
	ex := &exec.RuntimeExecutor{Runtime: e.R}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	task := runtimeTask("t1", "sleep", "inf")
	c, err := ex.Controller(task)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.Adopt(); ok || err != nil {
		t.Fatalf("Adopt before create: %v, %v", ok, err)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown of no container: %v", err)
	}
	if err := c.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Adopt(); ok {
		t.Error("a created, never started container was adopted")
	}
	again, _ := ex.Controller(task)
	if err := again.Prepare(ctx); err != nil {
		t.Fatalf("second Prepare: %v", err)
	}
	if n := len(e.R.List()); n != 1 {
		t.Fatalf("%d containers after two Prepares, want 1", n)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := e.Container("svc.1.t1")
	if err := again.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if now := e.Container("svc.1.t1"); now.Pid != first.Pid || !now.StartedAt.Equal(first.StartedAt) {
		t.Error("second Start restarted the container")
	}
	if ok, err := again.Adopt(); !ok || err != nil {
		t.Errorf("Adopt of a running container: %v, %v", ok, err)
	}
	cs, err := c.(exec.ContainerStatuser).ContainerStatus(ctx)
	if err != nil || cs.ContainerId != first.ID || int(cs.Pid) != first.Pid {
		t.Errorf("container status %v, %v", cs, err)
	}

	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := c.Wait(wctx); err != nil {
		t.Errorf("Wait after Shutdown: %v", err)
	}
	// An ended task is not run again by a Start (a task runs once).
	if err := c.Start(ctx); err != nil || e.Container("svc.1.t1").State != runtime.Exited {
		t.Errorf("Start of an exited task's container: %v, state %s", err, e.Container("svc.1.t1").State)
	}
	tasks, err := ex.ListTasks(ctx)
	if err != nil || len(tasks) != 1 || tasks[0].Id != "t1" || exec.ContainerName(tasks[0]) != "svc.1.t1" {
		t.Errorf("ListTasks %v, %v: want t1 named as its container", tasks, err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if n := len(e.R.List()); n != 0 {
		t.Errorf("%d containers after Remove", n)
	}
}

func TestRuntimeControllerImageMissing(t *testing.T) {
	e := exectest.NewRuntimeEnv(t)
	task := runtimeTask("t2")
	task.Spec.Container.Image = "nosuch"
	c, _ := (&exec.RuntimeExecutor{Runtime: e.R}).Controller(task)
	err := c.Prepare(context.Background())
	if !errors.Is(err, exec.ErrImageMissing) || !errors.Is(err, image.ErrNotFound) || err.Error() != "no such image: nosuch:latest" {
		t.Errorf("Prepare: %v; want ErrImageMissing reading \"no such image: nosuch:latest\"", err)
	}
}
