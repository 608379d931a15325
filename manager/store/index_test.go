package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestFindTasksIndexes(t *testing.T) {
	h := newHarness(t)
	h.commit(func(b *Batch) {
		b.CreateService(mkService("web", "shop_web", "shop"))
		b.CreateService(mkService("db", "shop_db", "shop"))
		b.CreateService(mkService("solo", "solo", ""))
		b.CreateTask(mkTask("t1", "web", "shop_web", "shop", "n1", 1))
		b.CreateTask(mkTask("t2", "web", "shop_web", "shop", "n2", 2))
		b.CreateTask(mkTask("t3", "db", "shop_db", "shop", "n1", 1))
		b.CreateTask(mkTask("t4", "solo", "solo", "", "", 1))
	})
	type want struct {
		by  By
		ids string
	}
	check := func(step string, wants []want) {
		t.Helper()
		for _, w := range wants {
			got := fmt.Sprint(taskIDs(t, h.s, w.by))
			if got != w.ids {
				t.Errorf("%s: FindTasks(%#v) = %s, want %s", step, w.by, got, w.ids)
			}
		}
	}
	check("created", []want{
		{ByServiceID("web"), "[t1 t2]"},
		{ByServiceID("db"), "[t3]"},
		{ByNodeID("n1"), "[t1 t3]"},
		{ByNodeID("n2"), "[t2]"},
		{ByStack("shop"), "[t1 t2 t3]"},
		{ByName("solo.1"), "[t4]"},
		{ByName("SHOP_WEB.2"), "[t2]"},
		{All, "[t1 t2 t3 t4]"},
		{ByServiceID("nope"), "[]"},
	})

	// Move t1 to node n2 and to service db (a task never changes service in
	// practice, but the index must follow whatever is written), take t3 out
	// of the stack, and remove t2.
	t1, t2, t3 := h.task("t1"), h.task("t2"), h.task("t3")
	t1.NodeId, t1.ServiceId = "n2", "db"
	t3.ServiceAnnotations.Labels = nil
	t3.DesiredState = typesv1.TaskState_TASK_STATE_SHUTDOWN
	h.commit(func(b *Batch) { b.UpdateTask(t1); b.UpdateTask(t3); b.DeleteTask(t2) })
	check("moved", []want{
		{ByServiceID("web"), "[]"},
		{ByServiceID("db"), "[t1 t3]"},
		{ByNodeID("n1"), "[t3]"},
		{ByNodeID("n2"), "[t1]"},
		{ByStack("shop"), "[t1]"},
		{ByDesiredState(typesv1.TaskState_TASK_STATE_SHUTDOWN), "[t3]"},
	})
	check("desired running", []want{{ByDesiredState(typesv1.TaskState_TASK_STATE_RUNNING), "[t1 t4]"}})

	h.s.View(func(tx ReadTx) {
		svcs, err := FindServices(tx, ByStack("shop"))
		if err != nil || len(svcs) != 2 {
			t.Errorf("FindServices(ByStack(shop)) = %v, %v", svcs, err)
		}
		svcs, err = FindServices(tx, ByIDPrefix("s"))
		if err != nil || len(svcs) != 1 || svcs[0].GetId() != "solo" {
			t.Errorf("FindServices(ByIDPrefix(s)) = %v, %v", svcs, err)
		}
		for _, by := range []By{ByServiceID("x"), ByNodeID("x"), ByDesiredState(0)} {
			if _, err := FindServices(tx, by); !errors.Is(err, ErrInvalid) {
				t.Errorf("FindServices(%#v) error = %v, want ErrInvalid", by, err)
			}
		}
	})
}

func TestFindNodesByName(t *testing.T) {
	h := newHarness(t)
	named := mkNode("n2", "box2")
	named.Spec = &typesv1.NodeSpec{Annotations: &typesv1.Annotations{Name: "edge"}}
	h.commit(func(b *Batch) { b.CreateNode(mkNode("n1", "box1")); b.CreateNode(named) })
	h.s.View(func(tx ReadTx) {
		for name, want := range map[string]string{"box1": "n1", "edge": "n2", "box2": ""} {
			nodes, _ := FindNodes(tx, ByName(name))
			got := ""
			if len(nodes) > 0 {
				got = nodes[0].GetId()
			}
			if got != want {
				t.Errorf("FindNodes(ByName(%q)) = %q, want %q", name, got, want)
			}
		}
	})
}

// TestIndexScale: the service index is kept up to date through many
// updates, and lists 150 replicas of one service among many others.
func TestIndexScale(t *testing.T) {
	h := newHarness(t)
	for s := range 20 {
		h.commit(func(b *Batch) {
			for slot := range 150 {
				b.CreateTask(mkTask(fmt.Sprintf("s%02d-t%03d", s, slot), fmt.Sprintf("svc%02d", s), "x", "", fmt.Sprintf("n%d", slot%7), uint64(slot+1)))
			}
		})
	}
	ids := taskIDs(t, h.s, ByServiceID("svc07"))
	if len(ids) != 150 || !slices.IsSorted(ids) {
		t.Fatalf("svc07 has %d tasks (sorted %v), want 150", len(ids), slices.IsSorted(ids))
	}
	if n := len(taskIDs(t, h.s, ByNodeID("n3"))); n != 20*21 { // slots 3, 10, … 143
		t.Fatalf("n3 has %d tasks, want %d", n, 20*21)
	}
}

func BenchmarkFindTasksByServiceID(b *testing.B) {
	s := New()
	p := NewLocalProposer(s)
	for svc := range 100 {
		batch := NewBatch(t0)
		for slot := range 150 {
			batch.CreateTask(mkTask(fmt.Sprintf("s%03d-t%03d", svc, slot), fmt.Sprintf("svc%03d", svc), "x", "", "", uint64(slot+1)))
		}
		if _, err := p.Propose(b.Context(), batch.Proto()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		s.View(func(tx ReadTx) {
			if tasks, _ := FindTasks(tx, ByServiceID("svc042")); len(tasks) != 150 {
				b.Fatal(len(tasks))
			}
		})
	}
}
