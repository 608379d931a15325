package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestGlobalProgressShowsErrorsPerNode(t *testing.T) {
	var buf bytes.Buffer
	out := &plainProgress{w: &buf, last: map[string]string{}}
	u := &globalProgress{out: out}
	svc := mkService("g", "monitor", "", 0, "prom/node-exporter")
	n1, n2 := "node1id0000000000000000000", "node2id0000000000000000000"
	active := map[string]bool{n1: true, n2: true}

	if done, _ := u.update(svc, nil, active, false); done {
		t.Fatal("converged without tasks")
	}
	tasks := []*typesv1.Task{
		mkTask("a", svc, 0, n1, running, running, 0, 0),
		mkTask("b", svc, 0, n2, typesv1.TaskState_TASK_STATE_REJECTED, running, 0, 0, withErr("no such image: prom/node-exporter")),
	}
	if done, _ := u.update(svc, tasks, active, false); done {
		t.Fatal("converged with a rejected task")
	}
	want := "overall progress: waiting for new tasks\noverall progress: 0 out of 2 tasks\nnode1id00000: running\nnode2id00000: no such image: prom/node-exporter\noverall progress: 1 out of 2 tasks\n"
	if buf.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestReplicatedProgressPrefersReplacementTask(t *testing.T) {
	var buf bytes.Buffer
	u := &replicatedProgress{out: &plainProgress{w: &buf, last: map[string]string{}}}
	svc := mkService("s", "web", "", 1, "nginx")
	tasks := []*typesv1.Task{
		mkTask("old", svc, 1, "n", failed, shutdown, 0, 0, withErr("task: non-zero exit (1)")),
		mkTask("new", svc, 1, "n", running, running, 0, 0),
	}
	done, err := u.update(svc, tasks, map[string]bool{"n": true}, false)
	if err != nil || !done {
		t.Fatalf("done %v err %v:\n%s", done, err, buf.String())
	}
	if strings.Contains(buf.String(), "non-zero") {
		t.Errorf("the ended task was shown:\n%s", buf.String())
	}
}

func TestWaitInterrupted(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	web := h.fake.services[0]
	h.fake.tasks = []*typesv1.Task{mkTask("t1", web, 1, "node1id0000000000000000000", typesv1.TaskState_TASK_STATE_PENDING, running, 0, 0)}
	h.fake.deployResp = &controlv1.DeployStackResponse{ServiceIds: []string{web.Id}}
	loader := &fakeLoader{spec: &typesv1.StackSpec{Name: "getstartedlab"}}
	sleeps := 0
	h.configure = func(a *App) {
		a.LoadStack = loader.load
		// The third pause is where the user presses Ctrl-C.
		a.Sleep = func(ctx context.Context, d time.Duration) error {
			sleeps++
			if sleeps == 3 {
				return context.Canceled
			}
			return h.clock.Sleep(ctx, d)
		}
	}
	got := h.mustRun("stack", "deploy", "-c", "c.yml", "--detach=false", "getstartedlab")
	if !strings.HasSuffix(got, "Operation continuing in background.\nUse `shoal service ps websvc0000000000000000000` to check progress.\n") {
		t.Errorf("interrupted wait:\n%s", got)
	}
}

func TestStackRemoveWaits(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	h.fake.removeResp["getstartedlab"] = []string{"Removing service getstartedlab_web"}
	// Each listing ends one more task.
	h.fake.beforeListTasks = func(f *fakeControl) {
		for _, t := range f.tasks {
			if !terminalState(t.Status.State) {
				t.Status.State = shutdown
				return
			}
		}
	}
	if got := h.mustRun("stack", "rm", "--detach=false", "getstartedlab"); got != "Removing service getstartedlab_web\n" {
		t.Errorf("stack rm: %q", got)
	}
	for _, task := range h.fake.tasks {
		if !terminalState(task.Status.State) {
			t.Errorf("returned while task %s is %s", task.Id, task.Status.State)
		}
	}
}
