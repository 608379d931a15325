package store

import (
	"strconv"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

var taskSchema = &schema[*typesv1.Task]{
	kind:         "task",
	name:         TaskName,
	stack:        func(t *typesv1.Task) string { return taskStack(t) },
	serviceID:    (*typesv1.Task).GetServiceId,
	nodeID:       (*typesv1.Task).GetNodeId,
	desiredState: (*typesv1.Task).GetDesiredState,
	setMeta:      func(t *typesv1.Task, m *typesv1.Meta) { t.Meta = m },
	stub:         func(id string, m *typesv1.Meta) *typesv1.Task { return &typesv1.Task{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, t *typesv1.Task) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Task{Task: t}}
	},
}

// TaskName returns a task's name as tables show it: its annotations name if
// it has one, else <service>.<slot> for a replicated task and
// <service>.<node id> for a global one (slot 0).
func TaskName(t *typesv1.Task) string {
	if n := t.GetAnnotations().GetName(); n != "" {
		return n
	}
	svc := t.GetServiceAnnotations().GetName()
	if svc == "" {
		svc = t.GetServiceId()
	}
	if t.GetSlot() != 0 {
		return svc + "." + strconv.FormatUint(t.GetSlot(), 10)
	}
	return svc + "." + t.GetNodeId()
}

// taskStack reads the stack from the service's labels, which the task
// carries, and falls back on the task's own.
func taskStack(t *typesv1.Task) string {
	if s := label(t.GetServiceAnnotations(), StackLabel); s != "" {
		return s
	}
	return label(t.GetAnnotations(), StackLabel)
}

// GetTask returns a copy of the task with that id, or nil.
func GetTask(tx ReadTx, id string) *typesv1.Task { return get(tx.state().tasks, id) }

// FindTasks returns copies of the tasks that by selects, ordered by id.
// ByServiceID and ByNodeID use indexes, so listing a service's tasks costs
// the number of its tasks, not of all tasks.
func FindTasks(tx ReadTx, by By) ([]*typesv1.Task, error) { return find(tx.state().tasks, by) }

// CreateTask adds the creation of t, stamped with the batch's time.
func (b *Batch) CreateTask(t *typesv1.Task) { addCreate(b, taskSchema, t) }

// UpdateTask adds an update of t; t.meta.version must be the version read.
func (b *Batch) UpdateTask(t *typesv1.Task) { addUpdate(b, taskSchema, t) }

// DeleteTask adds the removal of t; t.meta.version must be the version read.
func (b *Batch) DeleteTask(t *typesv1.Task) { addRemove(b, taskSchema, t) }
