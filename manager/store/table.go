package store

import (
	"slices"
	"strings"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
)

// StackLabel is the label that ties an object to its stack, as in Docker.
const StackLabel = "com.docker.stack.namespace"

// object is what every table holds; the generated types all have these
// getters.
type object interface {
	proto.Message
	GetId() string
	GetMeta() *typesv1.Meta
}

// schema describes one table: how to read the fields the store indexes and
// how to wrap an object into a store action. Each table's file declares
// its schema.
type schema[T object] struct {
	kind string // "task": used in errors
	// uniqueNames makes names unique within the table, compared without
	// case as swarmkit does, so that "Web" and "web" cannot both exist.
	uniqueNames bool
	name        func(T) string
	stack       func(T) string
	// Task-only fields; nil elsewhere, and Find with a selector on them
	// fails with ErrInvalid.
	serviceID    func(T) string
	nodeID       func(T) string
	desiredState func(T) typesv1.TaskState

	setMeta func(T, *typesv1.Meta)
	// stub makes the object a remove action carries: its id and version
	// only, so that deleting 150 tasks does not copy 150 specs into the log.
	stub   func(id string, meta *typesv1.Meta) T
	action func(storev1.StoreAction_Kind, T) *storev1.StoreAction
}

// table holds one kind of object by id, with its secondary indexes. Stored
// objects are never modified in place: a change replaces the pointer, so
// snapshots and events may share them with the table.
type table[T object] struct {
	schema *schema[T]
	objs   map[string]T
	// names maps a lowercased name to its id (unique-name tables only).
	names     map[string]string
	byStack   multiIndex
	byService multiIndex
	byNode    multiIndex
}

func newTable[T object](sc *schema[T]) *table[T] {
	t := &table[T]{schema: sc, objs: map[string]T{}, byStack: multiIndex{}}
	if sc.uniqueNames {
		t.names = map[string]string{}
	}
	if sc.serviceID != nil {
		t.byService = multiIndex{}
	}
	if sc.nodeID != nil {
		t.byNode = multiIndex{}
	}
	return t
}

// multiIndex maps a key (a service id, a stack name) to the ids that have it.
type multiIndex map[string]map[string]struct{}

func (m multiIndex) add(key, id string) {
	if key == "" {
		return
	}
	ids := m[key]
	if ids == nil {
		ids = map[string]struct{}{}
		m[key] = ids
	}
	ids[id] = struct{}{}
}

func (m multiIndex) remove(key, id string) {
	if key == "" {
		return
	}
	ids := m[key]
	delete(ids, id)
	if len(ids) == 0 {
		delete(m, key)
	}
}

func (t *table[T]) index(o T) {
	id, sc := o.GetId(), t.schema
	if t.names != nil {
		if n := sc.name(o); n != "" {
			t.names[strings.ToLower(n)] = id
		}
	}
	t.byStack.add(sc.stack(o), id)
	if t.byService != nil {
		t.byService.add(sc.serviceID(o), id)
	}
	if t.byNode != nil {
		t.byNode.add(sc.nodeID(o), id)
	}
}

func (t *table[T]) unindex(o T) {
	id, sc := o.GetId(), t.schema
	if t.names != nil {
		if n := strings.ToLower(sc.name(o)); n != "" && t.names[n] == id {
			delete(t.names, n)
		}
	}
	t.byStack.remove(sc.stack(o), id)
	if t.byService != nil {
		t.byService.remove(sc.serviceID(o), id)
	}
	if t.byNode != nil {
		t.byNode.remove(sc.nodeID(o), id)
	}
}

// put stores o, which the table owns from now on.
func (t *table[T]) put(o T) {
	if old, ok := t.objs[o.GetId()]; ok {
		t.unindex(old)
	}
	t.objs[o.GetId()] = o
	t.index(o)
}

// sorted returns the stored objects (not copies) ordered by id, so that
// snapshots are byte-identical on every replica.
func (t *table[T]) sorted() []T {
	out := make([]T, 0, len(t.objs))
	for _, o := range t.objs {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(a.GetId(), b.GetId()) })
	return out
}

// get returns a copy of the object with that id, or nil.
func get[T object](t *table[T], id string) T {
	o, ok := t.objs[id]
	if !ok {
		var zero T
		return zero
	}
	return proto.CloneOf(o)
}

// find returns copies of the objects that by selects, ordered by id.
func find[T object](t *table[T], by By) ([]T, error) {
	sc := t.schema
	var out []T
	fromIDs := func(ids map[string]struct{}) {
		for id := range ids {
			out = append(out, t.objs[id])
		}
	}
	scan := func(match func(T) bool) {
		for _, o := range t.objs {
			if match(o) {
				out = append(out, o)
			}
		}
	}
	switch b := by.(type) {
	case byAll:
		scan(func(T) bool { return true })
	case byIDPrefix:
		scan(func(o T) bool { return strings.HasPrefix(o.GetId(), string(b)) })
	case byName:
		if t.names != nil {
			if id, ok := t.names[strings.ToLower(string(b))]; ok {
				out = append(out, t.objs[id])
			}
		} else {
			scan(func(o T) bool { return strings.EqualFold(sc.name(o), string(b)) })
		}
	case byStack:
		fromIDs(t.byStack[string(b)])
	case byServiceID:
		if t.byService == nil {
			return nil, errorf(ErrInvalid, "find %ss by service id: %ss have no service", sc.kind, sc.kind)
		}
		fromIDs(t.byService[string(b)])
	case byNodeID:
		if t.byNode == nil {
			return nil, errorf(ErrInvalid, "find %ss by node id: %ss have no node", sc.kind, sc.kind)
		}
		fromIDs(t.byNode[string(b)])
	case byDesiredState:
		if sc.desiredState == nil {
			return nil, errorf(ErrInvalid, "find %ss by desired state: %ss have no desired state", sc.kind, sc.kind)
		}
		scan(func(o T) bool { return sc.desiredState(o) == typesv1.TaskState(b) })
	default:
		return nil, errorf(ErrInvalid, "find %ss: unknown selector %T", sc.kind, by)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(a.GetId(), b.GetId()) })
	for i, o := range out {
		out[i] = proto.CloneOf(o)
	}
	return out, nil
}

// By selects objects in Find calls: All, ByIDPrefix, ByName, ByStack, and,
// for tasks, ByServiceID, ByNodeID and ByDesiredState.
type By interface{ isBy() }

type (
	byAll          struct{}
	byIDPrefix     string
	byName         string
	byStack        string
	byServiceID    string
	byNodeID       string
	byDesiredState typesv1.TaskState
)

func (byAll) isBy()          {}
func (byIDPrefix) isBy()     {}
func (byName) isBy()         {}
func (byStack) isBy()        {}
func (byServiceID) isBy()    {}
func (byNodeID) isBy()       {}
func (byDesiredState) isBy() {}

// All selects every object of a table.
var All By = byAll{}

// ByIDPrefix selects objects whose id starts with prefix, as the CLI
// accepts ids shortened.
func ByIDPrefix(prefix string) By { return byIDPrefix(prefix) }

// ByName selects objects by name, compared without case: a service's or
// network's annotations name, a task's name (<service>.<slot>, or
// <service>.<node id> for global services, unless its annotations name one),
// a node's annotations name or else its hostname.
func ByName(name string) By { return byName(name) }

// ByStack selects objects labelled com.docker.stack.namespace=name; a task
// belongs to its service's stack.
func ByStack(name string) By { return byStack(name) }

// ByServiceID selects the tasks of a service (indexed).
func ByServiceID(id string) By { return byServiceID(id) }

// ByNodeID selects the tasks assigned to a node (indexed).
func ByNodeID(id string) By { return byNodeID(id) }

// ByDesiredState selects tasks by their desired state.
func ByDesiredState(state typesv1.TaskState) By { return byDesiredState(state) }

func label(a *typesv1.Annotations, key string) string { return a.GetLabels()[key] }
