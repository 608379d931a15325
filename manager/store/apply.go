package store

import (
	"strings"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
)

// txn stages one batch: every action is checked against the state before
// the batch (a batch touches each object at most once, so that state is
// the one each writer read), names are checked against the state after it,
// and only then is anything written. A rejected batch leaves no trace.
type txn struct {
	st     *state
	idx    uint64
	owned  bool
	events []Event

	clusters staged[*typesv1.Cluster]
	nodes    staged[*typesv1.Node]
	services staged[*typesv1.Service]
	tasks    staged[*typesv1.Task]
	networks staged[*typesv1.Network]
	secrets  staged[*typesv1.Secret]
	configs  staged[*typesv1.Config]
}

func newTxn(st *state, idx uint64, owned bool) *txn {
	return &txn{st: st, idx: idx, owned: owned}
}

// staged is one table's share of a batch.
type staged[T object] struct {
	ops   map[string]*op[T]
	order []*op[T] // in batch order, so that errors do not depend on map order
}

type op[T object] struct {
	kind   storev1.StoreAction_Kind
	old    T // the stored object, if any
	hasOld bool
	new    T // the object to store; unset for removes
}

func (tx *txn) stage(a *storev1.StoreAction) error {
	k := a.GetKind()
	switch t := a.GetTarget().(type) {
	case *storev1.StoreAction_Cluster:
		return stage(tx, tx.st.clusters, &tx.clusters, k, t.Cluster)
	case *storev1.StoreAction_Node:
		return stage(tx, tx.st.nodes, &tx.nodes, k, t.Node)
	case *storev1.StoreAction_Service:
		return stage(tx, tx.st.services, &tx.services, k, t.Service)
	case *storev1.StoreAction_Task:
		return stage(tx, tx.st.tasks, &tx.tasks, k, t.Task)
	case *storev1.StoreAction_Network:
		return stage(tx, tx.st.networks, &tx.networks, k, t.Network)
	case *storev1.StoreAction_Secret:
		return stage(tx, tx.st.secrets, &tx.secrets, k, t.Secret)
	case *storev1.StoreAction_Config:
		return stage(tx, tx.st.configs, &tx.configs, k, t.Config)
	case nil:
		return errorf(ErrInvalid, "%s action with an empty target", verb(k))
	default:
		return errorf(ErrInvalid, "%s action on an unknown target %T", verb(k), t)
	}
}

func verb(k storev1.StoreAction_Kind) string {
	switch k {
	case storev1.StoreAction_KIND_CREATE:
		return "create"
	case storev1.StoreAction_KIND_UPDATE:
		return "update"
	case storev1.StoreAction_KIND_REMOVE:
		return "remove"
	}
	return "store"
}

func stage[T object](tx *txn, t *table[T], st *staged[T], k storev1.StoreAction_Kind, obj T) error {
	sc := t.schema
	v := verb(k)
	if isNil(obj) {
		return errorf(ErrInvalid, "%s action with an empty %s", v, sc.kind)
	}
	id := obj.GetId()
	switch k {
	case storev1.StoreAction_KIND_CREATE, storev1.StoreAction_KIND_UPDATE, storev1.StoreAction_KIND_REMOVE:
	default:
		return errorf(ErrInvalid, "%s %s: unknown action kind %d", sc.kind, id, k)
	}
	if id == "" {
		return errorf(ErrInvalid, "%s %s: empty id", v, sc.kind)
	}
	if _, dup := st.ops[id]; dup {
		return errorf(ErrInvalid, "%s %s %s: the batch already changes this %s", v, sc.kind, id, sc.kind)
	}
	cur, exists := t.objs[id]
	o := &op[T]{kind: k, old: cur, hasOld: exists}
	switch k {
	case storev1.StoreAction_KIND_CREATE:
		if exists {
			return errorf(ErrExist, "create %s %s: it already exists", sc.kind, id)
		}
	default:
		if !exists {
			return errorf(ErrNotExist, "%s %s %s: no such %s", v, sc.kind, id, sc.kind)
		}
		if read, have := obj.GetMeta().GetVersion(), cur.GetMeta().GetVersion(); read != have {
			return errorf(ErrSequenceConflict, "%s %s %s: out of sequence: it was read at version %d, the store has version %d",
				v, sc.kind, id, read, have)
		}
	}
	ev := Event{Kind: k, Index: tx.idx}
	switch k {
	case storev1.StoreAction_KIND_REMOVE:
		ev.Object, ev.Old = cur, cur
	default:
		o.new = obj
		if !tx.owned {
			o.new = proto.CloneOf(obj)
		}
		m := ensureMeta(sc, o.new)
		m.Version = tx.idx
		if exists {
			// Creation time belongs to the store, not to whoever writes.
			m.CreatedAt = proto.CloneOf(cur.GetMeta().GetCreatedAt())
			ev.Old = cur
		}
		ev.Object = o.new
	}
	if st.ops == nil {
		st.ops = map[string]*op[T]{}
	}
	st.ops[id] = o
	st.order = append(st.order, o)
	tx.events = append(tx.events, ev)
	return nil
}

func (tx *txn) checkNames() error {
	for _, err := range []error{
		checkNames(tx.st.clusters, &tx.clusters),
		checkNames(tx.st.nodes, &tx.nodes),
		checkNames(tx.st.services, &tx.services),
		checkNames(tx.st.tasks, &tx.tasks),
		checkNames(tx.st.networks, &tx.networks),
		checkNames(tx.st.secrets, &tx.secrets),
		checkNames(tx.st.configs, &tx.configs),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkNames checks unique names against the state after the batch, so that
// one batch may rename a service away and give its old name to another.
func checkNames[T object](t *table[T], st *staged[T]) error {
	if t.names == nil || len(st.order) == 0 {
		return nil
	}
	sc := t.schema
	taken := map[string]string{} // lowercased name → id, within the batch
	for _, o := range st.order {
		if o.kind == storev1.StoreAction_KIND_REMOVE {
			continue
		}
		name := sc.name(o.new)
		if name == "" {
			continue
		}
		n := strings.ToLower(name)
		id := o.new.GetId()
		if other, ok := taken[n]; ok && other != id {
			return errorf(ErrNameConflict, "%s name %q is already in use", sc.kind, name)
		}
		taken[n] = id
		holder, ok := t.names[n]
		if !ok || holder == id {
			continue
		}
		// The holder keeps the name unless this batch removes or renames it.
		if ho, touched := st.ops[holder]; touched &&
			(ho.kind == storev1.StoreAction_KIND_REMOVE || strings.ToLower(sc.name(ho.new)) != n) {
			continue
		}
		return errorf(ErrNameConflict, "%s name %q is already in use", sc.kind, name)
	}
	return nil
}

func (tx *txn) commit() {
	commit(tx.st.clusters, &tx.clusters)
	commit(tx.st.nodes, &tx.nodes)
	commit(tx.st.services, &tx.services)
	commit(tx.st.tasks, &tx.tasks)
	commit(tx.st.networks, &tx.networks)
	commit(tx.st.secrets, &tx.secrets)
	commit(tx.st.configs, &tx.configs)
}

func commit[T object](t *table[T], st *staged[T]) {
	// Unindex every old object before indexing any new one, so that a name
	// passed from one object to another in the batch ends up indexed.
	for _, o := range st.order {
		if o.hasOld {
			t.unindex(o.old)
		}
	}
	for _, o := range st.order {
		if o.kind == storev1.StoreAction_KIND_REMOVE {
			delete(t.objs, o.old.GetId())
			continue
		}
		t.objs[o.new.GetId()] = o.new
		t.index(o.new)
	}
}
