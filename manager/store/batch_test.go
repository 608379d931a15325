package store

import (
	"context"
	"testing"
	"time"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestBatchStamps(t *testing.T) {
	earlier := t0.Add(-time.Hour)
	read := mkTask("t1", "s1", "web", "", "", 1)
	read.Meta = &typesv1.Meta{Version: 7, CreatedAt: timestamppb.New(earlier), UpdatedAt: timestamppb.New(earlier)}

	b := NewBatch(t0)
	b.CreateService(mkService("s1", "web", ""))
	b.UpdateTask(read)
	b.DeleteTask(read)
	if b.Len() != 3 {
		t.Fatalf("Len = %d", b.Len())
	}
	read.NodeId = "changed after add" // the batch holds its own copy
	actions := b.Proto().GetActions()

	create := actions[0]
	if create.GetKind() != storev1.StoreAction_KIND_CREATE {
		t.Fatalf("action 0 kind %v", create.GetKind())
	}
	m := create.GetService().GetMeta()
	if !m.GetCreatedAt().AsTime().Equal(t0) || !m.GetUpdatedAt().AsTime().Equal(t0) {
		t.Fatalf("create stamped %v", m)
	}

	update := actions[1].GetTask()
	if actions[1].GetKind() != storev1.StoreAction_KIND_UPDATE || update.GetNodeId() != "" {
		t.Fatalf("update action %v", actions[1])
	}
	m = update.GetMeta()
	if m.GetVersion() != 7 || !m.GetCreatedAt().AsTime().Equal(earlier) || !m.GetUpdatedAt().AsTime().Equal(t0) {
		t.Fatalf("update stamped %v; want version 7, created %v, updated %v", m, earlier, t0)
	}

	// A remove carries the id and the version read, nothing else.
	want := &typesv1.Task{Id: "t1", Meta: &typesv1.Meta{Version: 7}}
	if actions[2].GetKind() != storev1.StoreAction_KIND_REMOVE || !proto.Equal(actions[2].GetTask(), want) {
		t.Fatalf("remove action %v, want %v", actions[2], want)
	}

	// Proto is a snapshot of the builder.
	p := b.Proto()
	b.CreateNode(mkNode("n1", "h"))
	if len(p.GetActions()) != 3 {
		t.Fatal("adding after Proto changed its result")
	}
}

// TestApplyKeepsCreationTime: an update cannot move created_at, whatever
// the writer sends.
func TestApplyKeepsCreationTime(t *testing.T) {
	h := newHarness(t)
	h.commit(func(b *Batch) { b.CreateTask(mkTask("t1", "s1", "web", "", "", 1)) })
	task := h.task("t1")
	task.Meta.CreatedAt = timestamppb.New(t0.Add(time.Hour))
	h.commit(func(b *Batch) { b.UpdateTask(task) })
	if got := h.task("t1").GetMeta().GetCreatedAt().AsTime(); !got.Equal(t0) {
		t.Fatalf("created_at = %v, want %v", got, t0)
	}
}

func TestLocalProposerIndexes(t *testing.T) {
	h := newHarness(t)
	for want := uint64(1); want <= 3; want++ {
		idx := h.commit(func(b *Batch) { b.CreateNode(mkNode("n"+string(rune('0'+want)), "h")) })
		if idx != want || h.s.Index() != want {
			t.Fatalf("index %d (store %d), want %d", idx, h.s.Index(), want)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.p.Propose(ctx, h.s.NewBatch().Proto()); err == nil {
		t.Fatal("Propose with a cancelled context succeeded")
	}
}
