package agent_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/agent/exec"
	"github.com/shoal-dev/shoal/agent/exec/exectest"
	"github.com/shoal-dev/shoal/internal/testutil"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

func helperTask(id string, slot uint64, args ...string) *typesv1.Task {
	t := newTask(id, slot)
	t.Spec.Container.Args = args
	return t
}

func TestRuntimeTasks(t *testing.T) {
	e := exectest.NewRuntimeEnv(t)

	web := helperTask("web1", 1, "sleep", "inf")
	web.Spec.Container.Labels = map[string]string{"tier": "front"}
	web.Spec.Container.StopGracePeriod = durationpb.New(2 * time.Second)
	web.Spec.Resources = &typesv1.ResourceRequirements{
		Limits:       &typesv1.Resources{NanoCpus: 5e8, MemoryBytes: 64 << 20, Pids: 100},
		Reservations: &typesv1.Resources{MemoryBytes: 16 << 20},
	}
	web2 := helperTask("web2", 2, "sleep", "inf")
	missing := helperTask("miss1", 3)
	missing.Spec.Container.Image = "nosuch:latest"
	oom := helperTask("oom1", 4, "alloc", "200")
	oom.Spec.Resources = &typesv1.ResourceRequirements{Limits: &typesv1.Resources{MemoryBytes: 50 << 20}}

	d := newFakeDispatcher(web, web2, missing, oom)
	stop := startAgent(t, d, &exec.RuntimeExecutor{Runtime: e.R})

	st := waitState(t, d, "web1", running)
	c := e.Container("getstartedlab_web.1.web1")
	if st.Container.GetContainerId() != c.ID || int(st.Container.GetPid()) != c.Pid || c.State != runtime.Running {
		t.Errorf("status container %v; container %s pid %d %s", st.Container, c.ID, c.Pid, c.State)
	}
	for k, v := range map[string]string{
		exec.LabelTaskID: "web1", exec.LabelTaskName: "getstartedlab_web.1", exec.LabelServiceID: "svc-web",
		exec.LabelServiceName: "getstartedlab_web", exec.LabelNodeID: "node-1", exec.LabelStackNamespace: "getstartedlab",
		"tier": "front",
	} {
		if c.Spec.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Spec.Labels[k], v)
		}
	}
	if res := c.Spec.Resources; res.NanoCPUs != 5e8 || res.MemoryLimit != 64<<20 || res.PidsLimit != 100 || res.MemoryReservation != 16<<20 {
		t.Errorf("resources %+v", res)
	}
	if c.Hostname != c.ID[:12] || c.Spec.StopTimeout == nil || *c.Spec.StopTimeout != 2*time.Second {
		t.Errorf("hostname %q (want %q), stop timeout %v (want 2s)", c.Hostname, c.ID[:12], c.Spec.StopTimeout)
	}

	st = waitState(t, d, "miss1", rejected)
	if st.Err != "no such image: nosuch:latest" {
		t.Errorf("missing image: err %q", st.Err)
	}
	if _, err := e.R.Inspect("getstartedlab_web.3.miss1"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("container of a rejected task: %v", err)
	}

	st = waitState(t, d, "oom1", failed)
	if st.Err != "OOM killed (memory limit 50MiB)" || !st.Container.GetOomKilled() || st.Container.GetExitCode() != 137 {
		t.Errorf("oom: err %q, container %v", st.Err, st.Container)
	}

	waitState(t, d, "web2", running)
	d.setDesired("web2", shutdown)
	waitState(t, d, "web2", shutdown)
	if c2 := e.Container("getstartedlab_web.2.web2"); c2.State != runtime.Exited {
		t.Errorf("shut-down task's container is %s", c2.State)
	}

	// Restart: the agent and the runtime go away, the containers stay.
	// While the agent is away the manager lets go of the OOM task.
	stop()
	d.mu.Lock()
	delete(d.tasks, "oom1")
	seen := len(d.updatesOfLocked("web1"))
	d.mu.Unlock()
	e.Reopen()
	startAgent(t, d, &exec.RuntimeExecutor{Runtime: e.R})

	eventually(t, "web1 reported again", func() bool { return len(d.updatesOf("web1")) > seen })
	st = d.updatesOf("web1")[seen]
	after := e.Container("getstartedlab_web.1.web1")
	if st.State != running || st.Container.GetContainerId() != c.ID {
		t.Errorf("after restart: %v container %v, want RUNNING in %s", st.State, st.Container, c.ID)
	}
	if after.ID != c.ID || after.Pid != c.Pid || !after.StartedAt.Equal(c.StartedAt) || after.State != runtime.Running {
		t.Errorf("container after restart: %s pid %d started %v %s; before: %s pid %d started %v (want it adopted, not restarted)",
			after.ID, after.Pid, after.StartedAt, after.State, c.ID, c.Pid, c.StartedAt)
	}
	eventually(t, "unassigned task's container removed", func() bool {
		_, err := e.R.Inspect("getstartedlab_web.4.oom1")
		return errors.Is(err, runtime.ErrNotFound)
	})
	if _, err := e.R.Inspect("getstartedlab_web.2.web2"); err != nil {
		t.Errorf("shut-down task that is still assigned lost its container: %v", err)
	}
}
