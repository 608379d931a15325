package store

import (
	"slices"
	"time"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Batch builds one Raft entry on the leader. It stamps created/updated times
// with the now it was made with, because the FSM must be deterministic: every
// replica applies the same bytes, so times cannot be read from a replica's
// clock in Apply, which only sets meta.version.
//
// The builder copies what it is given, so callers may keep modifying their
// objects. A batch holds at most one action per object (the FSM rejects a
// second one with ErrInvalid): writers that gather changes, such as status
// bursts from agents, keep the latest per object before adding it.
type Batch struct {
	now     time.Time
	actions []*storev1.StoreAction
}

// NewBatch returns an empty batch whose actions are stamped with now.
func NewBatch(now time.Time) *Batch { return &Batch{now: now} }

// Len returns how many actions the batch holds.
func (b *Batch) Len() int { return len(b.actions) }

// Proto returns the batch to propose. Adding to b afterwards does not change
// what Proto returned.
func (b *Batch) Proto() *storev1.Batch {
	return &storev1.Batch{Actions: slices.Clone(b.actions)}
}

func ensureMeta[T object](sc *schema[T], o T) *typesv1.Meta {
	m := o.GetMeta()
	if m == nil {
		m = &typesv1.Meta{}
		sc.setMeta(o, m)
	}
	return m
}

// isNil reports whether o is a nil pointer, which an interface comparison
// cannot tell for a type parameter.
func isNil[T object](o T) bool { return !o.ProtoReflect().IsValid() }

func addCreate[T object](b *Batch, sc *schema[T], o T) {
	if isNil(o) {
		// Left for the FSM to reject loudly ("empty target") rather than
		// dropped here where nobody would notice.
		b.actions = append(b.actions, &storev1.StoreAction{Kind: storev1.StoreAction_KIND_CREATE})
		return
	}
	c := proto.CloneOf(o)
	m := ensureMeta(sc, c)
	m.CreatedAt = timestamppb.New(b.now)
	m.UpdatedAt = timestamppb.New(b.now)
	b.actions = append(b.actions, sc.action(storev1.StoreAction_KIND_CREATE, c))
}

func addUpdate[T object](b *Batch, sc *schema[T], o T) {
	if isNil(o) {
		b.actions = append(b.actions, &storev1.StoreAction{Kind: storev1.StoreAction_KIND_UPDATE})
		return
	}
	c := proto.CloneOf(o)
	ensureMeta(sc, c).UpdatedAt = timestamppb.New(b.now)
	b.actions = append(b.actions, sc.action(storev1.StoreAction_KIND_UPDATE, c))
}

func addRemove[T object](b *Batch, sc *schema[T], o T) {
	if isNil(o) {
		b.actions = append(b.actions, &storev1.StoreAction{Kind: storev1.StoreAction_KIND_REMOVE})
		return
	}
	stub := sc.stub(o.GetId(), &typesv1.Meta{Version: o.GetMeta().GetVersion()})
	b.actions = append(b.actions, sc.action(storev1.StoreAction_KIND_REMOVE, stub))
}
