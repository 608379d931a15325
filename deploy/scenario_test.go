package deploy

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// agent plays every node at once: it decides what a new task does when it
// starts (RUNNING, or a terminal state to fail it) and stops tasks told to
// stop. It reports whether anything moved.
type agent func(t *typesv1.Task) typesv1.TaskState

func (w *world) act(tb testing.TB, start agent) bool {
	moved := false
	for _, t := range w.tasks {
		switch {
		case IsTerminal(state(t)):
		case t.GetDesiredState() > RUNNING:
			w.step(tb, t.GetId(), SHUTDOWN)
			moved = true
		case state(t) < RUNNING:
			w.step(tb, t.GetId(), start(t))
			moved = true
		}
	}
	return moved
}

// converge runs the loop: reconcile, apply, let the agent act, and when
// nothing moves wait as long as the result asked. It stops when nothing is
// left to do and returns the number of rounds; each round calls check.
func (w *world) converge(tb testing.TB, start agent, check func(Result)) int {
	tb.Helper()
	for round := 1; round < 200; round++ {
		r := w.reconcile(tb)
		w.apply(r)
		if check != nil {
			check(r)
		}
		if w.act(tb, start) || !r.Empty() {
			continue
		}
		if r.Requeue == 0 {
			return round
		}
		w.now = w.now.Add(r.Requeue)
	}
	tb.Fatalf("no convergence after 200 rounds")
	return 0
}

func runAll(t *typesv1.Task) typesv1.TaskState { return RUNNING }

func (w *world) live() (cur, old int) {
	for _, t := range w.tasks {
		if t.GetDesiredState() == RUNNING && !IsTerminal(state(t)) {
			if specEqual(t.GetSpec(), w.svc.GetSpec().GetTask()) {
				cur++
			} else {
				old++
			}
		}
	}
	return cur, old
}

func TestScenarioDeployAndScale(t *testing.T) {
	w := &world{svc: svc(5), now: t0}
	w.converge(t, runAll, nil)
	if cur, _ := w.live(); cur != 5 || len(w.tasks) != 5 {
		t.Fatalf("after deploy: %d live of %d tasks, want 5 of 5", cur, len(w.tasks))
	}
	w.svc.Spec.GetReplicated().Replicas = 2
	w.converge(t, runAll, nil)
	for _, task := range w.tasks {
		if live := task.GetDesiredState() == RUNNING; live != (task.GetSlot() <= 2) {
			t.Errorf("after scale down: %s desired %v", TaskName(w.svc, task), task.GetDesiredState())
		}
	}
	w.svc.Spec.GetReplicated().Replicas = 4
	w.converge(t, runAll, nil)
	if cur, _ := w.live(); cur != 4 {
		t.Fatalf("after scale up: %d live, want 4", cur)
	}
}

// A rolling update of 3 replicas, one at a time, 2 s apart, each watched
// for 5 s: batches at 0 s, 7 s and 14 s, completed at 19 s, never more than
// one slot in flight nor fewer than 2 tasks running.
func TestScenarioRollingUpdate(t *testing.T) {
	w := &world{
		svc:   svc(3, update(&typesv1.UpdateConfig{Parallelism: 1, Delay: dur(2 * second), Monitor: dur(5 * second)})),
		tasks: outdated(1, 2, 3),
		now:   t0,
	}
	var batches []time.Duration
	w.converge(t, runAll, func(r Result) {
		if len(r.Create) > 0 {
			batches = append(batches, w.now.Sub(t0))
		}
		if cur, old := w.live(); cur+old < 2 || cur+old > 3 {
			t.Errorf("at %v: %d tasks wanted running", w.now.Sub(t0), cur+old)
		}
	})
	want := []time.Duration{0, 7 * second, 14 * second}
	if len(batches) != len(want) || batches[0] != want[0] || batches[1] != want[1] || batches[2] != want[2] {
		t.Errorf("batches at %v, want %v", batches, want)
	}
	st := w.svc.GetUpdateStatus()
	if st.GetState() != completed || !st.GetCompletedAt().AsTime().Equal(t0.Add(19*second)) {
		t.Errorf("status %v completed at %v, want COMPLETED at +19s", st.GetState(), st.GetCompletedAt().AsTime().Sub(t0))
	}
	if cur, old := w.live(); cur != 3 || old != 0 {
		t.Errorf("%d current and %d old tasks running, want 3 and 0", cur, old)
	}
}

func TestScenarioStartFirst(t *testing.T) {
	w := &world{
		svc:   svc(2, update(&typesv1.UpdateConfig{Parallelism: 1, Order: typesv1.UpdateConfig_ORDER_START_FIRST})),
		tasks: outdated(1, 2),
		now:   t0,
	}
	w.converge(t, runAll, func(Result) {
		// Start-first never runs fewer tasks than replicas.
		running := 0
		for _, task := range w.tasks {
			if state(task) == RUNNING && task.GetDesiredState() == RUNNING {
				running++
			}
		}
		if running < 2 {
			t.Errorf("at %v: %d tasks running", w.now.Sub(t0), running)
		}
	})
	if w.svc.GetUpdateStatus().GetState() != completed {
		t.Errorf("status %v", w.svc.GetUpdateStatus().GetState())
	}
	if cur, old := w.live(); cur != 2 || old != 0 {
		t.Errorf("%d current and %d old tasks running, want 2 and 0", cur, old)
	}
}

// A new image that fails on start: the update rolls back to the previous
// spec and every slot ends up running it again.
func TestScenarioRollback(t *testing.T) {
	w := &world{
		svc: svc(3, update(&typesv1.UpdateConfig{
			Parallelism:   1,
			FailureAction: typesv1.UpdateConfig_FAILURE_ACTION_ROLLBACK,
		})),
		tasks: outdated(1, 2, 3),
		now:   t0,
	}
	failNew := func(t *typesv1.Task) typesv1.TaskState {
		if t.GetSpec().GetContainer().GetImage() == newImage {
			return FAILED
		}
		return RUNNING
	}
	w.converge(t, failNew, nil)
	if st := w.svc.GetUpdateStatus().GetState(); st != rbComplete {
		t.Errorf("status %v, want ROLLBACK_COMPLETED", st)
	}
	if img := w.svc.GetSpec().GetTask().GetContainer().GetImage(); img != oldImage || w.svc.GetPreviousSpec() != nil {
		t.Errorf("spec runs %s, previous spec %v", img, w.svc.GetPreviousSpec())
	}
	if cur, old := w.live(); cur != 3 || old != 0 {
		t.Errorf("%d tasks of the restored spec running and %d others, want 3 and 0", cur, old)
	}
	newTasks := 0
	for _, task := range w.tasks {
		if task.GetSpec().GetContainer().GetImage() == newImage {
			newTasks++
		}
	}
	if newTasks != 1 {
		t.Errorf("%d tasks of the failed spec were started, want 1", newTasks)
	}
}

// A task that always fails, restarted at most 3 times, 1 s apart: 4 tasks
// in its slot, then the slot is done and nothing is pending.
func TestScenarioCrashLoop(t *testing.T) {
	w := &world{svc: svc(1, restart(typesv1.RestartPolicy_CONDITION_ANY, second, 3, 0)), now: t0}
	w.converge(t, func(*typesv1.Task) typesv1.TaskState { return FAILED }, nil)
	if len(w.tasks) != 4 {
		t.Errorf("%d tasks, want 4", len(w.tasks))
	}
	if d := w.now.Sub(t0); d != 3*second {
		t.Errorf("last restart at +%v, want +3s", d)
	}
}

// A node goes down: its tasks move to the other nodes, and when it comes
// back nothing changes.
func TestScenarioNodeDown(t *testing.T) {
	w := &world{svc: svc(2), nodes: []*typesv1.Node{ready("n1"), ready("n2")}, now: t0}
	w.converge(t, runAll, nil)
	w.tasks[1] = proto.Clone(w.tasks[1]).(*typesv1.Task)
	w.tasks[1].NodeId = "n2"
	w.nodes = []*typesv1.Node{ready("n1"), down("n2")}
	w.converge(t, runAll, nil)
	if cur, _ := w.live(); cur != 2 || len(w.tasks) != 3 {
		t.Errorf("%d live of %d tasks, want 2 of 3", cur, len(w.tasks))
	}
	w.nodes = []*typesv1.Node{ready("n1"), ready("n2")}
	if r := w.reconcile(t); !r.Empty() {
		t.Errorf("node back: %v", summarize(r))
	}
}

func TestScenarioRemove(t *testing.T) {
	w := &world{svc: svc(3), now: t0}
	w.converge(t, runAll, nil)
	w.svc = nil
	w.converge(t, runAll, nil)
	if len(w.tasks) != 0 {
		t.Errorf("%d tasks left", len(w.tasks))
	}
}
