package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// next receives one event or fails after a deadline (a safety net, not a
// synchronisation: events are sent before Propose returns).
func next(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return Event{}
}

func TestWatchEvents(t *testing.T) {
	h := newHarness(t)
	h.commit(func(b *Batch) { b.CreateService(mkService("s1", "web", "")) })
	ch := h.s.Watch(t.Context())

	i1 := h.commit(func(b *Batch) {
		b.CreateTask(mkTask("t1", "s1", "web", "", "", 1))
		b.CreateTask(mkTask("t2", "s1", "web", "", "", 2))
	})
	t1 := h.task("t1")
	t1.NodeId = "n1"
	i2 := h.commit(func(b *Batch) { b.UpdateTask(t1) })
	t2 := h.task("t2")
	i3 := h.commit(func(b *Batch) { b.DeleteTask(t2) })

	type want struct {
		kind  storev1.StoreAction_Kind
		id    string
		node  string // of Object
		old   string // node of Old; "-" for no Old
		index uint64
	}
	for i, w := range []want{
		{storev1.StoreAction_KIND_CREATE, "t1", "", "-", i1},
		{storev1.StoreAction_KIND_CREATE, "t2", "", "-", i1},
		{storev1.StoreAction_KIND_UPDATE, "t1", "n1", "", i2},
		{storev1.StoreAction_KIND_REMOVE, "t2", "", "", i3},
	} {
		ev := next(t, ch)
		obj, _ := ev.Object.(*typesv1.Task)
		old := "-"
		if ev.Old != nil {
			old = ev.Old.(*typesv1.Task).GetNodeId()
		}
		if ev.Kind != w.kind || obj.GetId() != w.id || obj.GetNodeId() != w.node || old != w.old || ev.Index != w.index || ev.Err != nil {
			t.Fatalf("event %d = %v %s node=%q old=%q index=%d err=%v; want %+v",
				i, ev.Kind, obj.GetId(), obj.GetNodeId(), old, ev.Index, ev.Err, w)
		}
		if ev.Kind != storev1.StoreAction_KIND_REMOVE && obj.GetMeta().GetVersion() != w.index {
			t.Fatalf("event %d object version %d, want %d", i, obj.GetMeta().GetVersion(), w.index)
		}
	}

	// Events are copies: a consumer may modify them.
	t1 = h.task("t1")
	t1.DesiredState = typesv1.TaskState_TASK_STATE_SHUTDOWN
	h.commit(func(b *Batch) { b.UpdateTask(t1) })
	ev := next(t, ch)
	ev.Object.(*typesv1.Task).NodeId = "mutated"
	ev.Old.(*typesv1.Task).NodeId = "mutated"
	if got := h.task("t1").GetNodeId(); got != "n1" {
		t.Fatalf("modifying an event changed the store: node %q", got)
	}
}

func TestWatchClosesWhenContextEnds(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(t.Context())
	ch := h.s.Watch(ctx)
	h.commit(func(b *Batch) { b.CreateNode(mkNode("n1", "a")) })
	cancel()
	// Buffered events may still come; then the channel closes, without an
	// Err event since the consumer asked for the end.
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				h.s.watchMu.Lock()
				n := len(h.s.watchers)
				h.s.watchMu.Unlock()
				if n != 0 {
					t.Fatalf("%d watchers still registered", n)
				}
				// The store goes on without it.
				h.commit(func(b *Batch) { b.CreateNode(mkNode("n2", "b")) })
				return
			}
			if ev.Err != nil {
				t.Fatalf("cancelled watch reported %v", ev.Err)
			}
		case <-deadline:
			t.Fatal("channel not closed 5s after cancel")
		}
	}
}

// TestSlowWatcherIsDropped: a watcher that does not read does not block
// Apply; it gets the events it had room for, then ErrWatchDropped.
func TestSlowWatcherIsDropped(t *testing.T) {
	h := newHarness(t)
	h.s.WatchBuffer = 3
	slow := h.s.Watch(t.Context())
	fast := h.s.Watch(t.Context())
	// The fast watcher reads each batch as it comes; the slow one never
	// reads until the end. Apply never waits for it.
	const n = 10
	for i := range n {
		h.commit(func(b *Batch) { b.CreateNode(mkNode(fmt.Sprint("n", i), "h")) })
		if ev := next(t, fast); ev.Err != nil {
			t.Fatalf("fast watcher dropped at event %d: %v", i, ev.Err)
		}
	}

	got := 0
	for ev := range slow {
		if ev.Err != nil {
			if !errors.Is(ev.Err, ErrWatchDropped) || ev.Object != nil {
				t.Fatalf("last event = %+v, want ErrWatchDropped", ev)
			}
			if _, ok := <-slow; ok {
				t.Fatal("channel not closed after the Err event")
			}
			if got >= n {
				t.Fatalf("slow watcher got all %d events", got)
			}
			t.Logf("slow watcher: %d events, then %v", got, ev.Err)
			return
		}
		got++
	}
	t.Fatal("slow watcher closed without an Err event")
}

func TestViewAndWatchHasNoGap(t *testing.T) {
	h := newHarness(t)
	const n = 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			h.commit(func(b *Batch) { b.CreateTask(mkTask(fmt.Sprintf("t%03d", i), "s", "s", "", "", uint64(i+1))) })
		}
	}()
	seen := map[string]bool{}
	ch := h.s.ViewAndWatch(t.Context(), func(tx ReadTx) {
		tasks, _ := FindTasks(tx, All)
		for _, x := range tasks {
			seen[x.GetId()] = true
		}
	})
	for len(seen) < n {
		ev := next(t, ch)
		id := ev.Object.(*typesv1.Task).GetId()
		if seen[id] {
			t.Fatalf("task %s both listed and watched", id)
		}
		seen[id] = true
	}
	<-done
}

func TestRestoreDropsWatchers(t *testing.T) {
	h := newHarness(t)
	ch := h.s.Watch(t.Context())
	if err := h.s.Restore(New().Snapshot(), 42); err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch)
	if !errors.Is(ev.Err, ErrWatchDropped) {
		t.Fatalf("event after restore = %+v, want ErrWatchDropped", ev)
	}
}

func TestWatchRace(t *testing.T) {
	// Run with -race: watchers come and go while batches are applied.
	h := newHarness(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 300 {
			h.commit(func(b *Batch) { b.CreateNode(mkNode(fmt.Sprint("n", i), "h")) })
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			return
		default:
		}
		ctx, cancel := context.WithCancel(t.Context())
		ch := h.s.Watch(ctx)
		if i%2 == 0 {
			select {
			case <-ch:
			case <-done:
			}
		}
		cancel()
		for range ch {
		}
		h.s.View(func(tx ReadTx) { _, _ = FindNodes(tx, All) })
	}
}
