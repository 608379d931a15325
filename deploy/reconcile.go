package deploy

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/internal/identity"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Defaults Docker swarm uses when a spec or the cluster leaves a value out.
const (
	// DefaultHistoryLimit is how many ended tasks are kept per slot when
	// the cluster sets no task_history_limit.
	DefaultHistoryLimit = 5
	// DefaultRestartDelay is the wait between a task's end and its
	// replacement when the restart policy names no delay.
	DefaultRestartDelay = 5 * time.Second
	// DefaultMonitor is how long a task started by a rolling update must
	// keep running before its batch counts as done.
	DefaultMonitor = 5 * time.Second
)

// Input is everything one reconcile of one service looks at: a snapshot of
// the store and the time. Reconcile does not modify it.
type Input struct {
	// Service is the service to reconcile; nil when it was removed, and
	// then all its tasks are shut down and deleted.
	Service *typesv1.Service
	// Tasks are every task of the service still in the store, in any
	// state. Tasks of another service are ignored.
	Tasks []*typesv1.Task
	// Nodes must list every node of the cluster: global services place
	// one task on each, and a task whose node is missing (removed) or
	// DOWN is treated as lost. An empty list means the caller knows
	// nothing of the nodes: then no task is judged by its node and a
	// global service gets no new task.
	Nodes []*typesv1.Node
	// Now is the time decisions are taken at; Reconcile reads no clock.
	Now time.Time
	// HistoryLimit is how many ended tasks are kept per slot (per node
	// for a global service): the cluster's task_history_limit. 0 means
	// DefaultHistoryLimit; a negative value keeps every ended task.
	HistoryLimit int
	// NewID makes ids for new tasks; nil means identity.NewID. Tests pass
	// a counter so that results are deterministic.
	NewID func() string
	// Eligible reports whether a global service may run a task on node.
	// task is a template of the task that would be created (no id, no
	// node); the function must not keep or change it. It should check
	// readiness, availability and placement constraints, not free
	// resources: a node that is only full would otherwise see its own
	// task shut down. Nil means the node is READY and ACTIVE.
	Eligible func(node *typesv1.Node, task *typesv1.Task) bool
}

// Result is what one reconcile decided: the loop applies it as one store
// batch. Tasks in Update are copies; nothing in Result aliases the Input.
type Result struct {
	// Create are new tasks: state NEW, desired RUNNING, the service's
	// task spec and spec version, their slot (or node) and name.
	Create []*typesv1.Task
	// Update are tasks whose desired state rises (to SHUTDOWN); only the
	// desired state differs from the task read, its meta.version
	// included, so the store rejects the batch if the task moved since.
	Update []*typesv1.Task
	// Delete are ids of tasks to delete: ended tasks beyond the history
	// limit and the done tasks of a removed service.
	Delete []string
	// ServiceUpdate is the service with a new update status (a rolling
	// update started, paused or completed), or with its previous spec
	// restored by an automatic rollback; nil when the service is unchanged.
	ServiceUpdate *typesv1.Service
	// Requeue, when positive, asks to reconcile again after this long
	// even if nothing changes in the store: a restart delay, a rolling
	// update's monitor window or its delay between batches is pending.
	Requeue time.Duration
}

// Empty reports whether the result writes nothing. Requeue is not a write:
// a result that only waits is empty.
func (r Result) Empty() bool {
	return len(r.Create) == 0 && len(r.Update) == 0 && len(r.Delete) == 0 && r.ServiceUpdate == nil
}

// Reconcile compares a service with its tasks and returns the writes that
// bring them closer: tasks to create, to stop, to delete, and the service's
// update status. It is pure: same input, same result. Applying the result
// and reconciling again at the same time gives an empty result, unless a
// pending delay asked for a Requeue.
func Reconcile(in Input) Result {
	p := newPass(in)
	if in.Service == nil {
		p.removeAll()
		return p.result()
	}
	rolledBack := p.reconcile()
	if rolledBack == nil {
		return p.result()
	}
	// A failed update rolls back: restart the decision from the restored
	// spec so that the same result already starts the rollback, instead
	// of first writing tasks for the spec being abandoned. The second
	// pass cannot roll back again: a rollback that fails pauses.
	in.Service = rolledBack
	q := newPass(in)
	q.reconcile()
	res := q.result()
	if res.ServiceUpdate == nil {
		res.ServiceUpdate = rolledBack
	}
	return res
}

// pass is one reconcile: the input, indexes over it, and the decisions
// taken so far. Nothing is written to the input; task ids for new tasks are
// drawn only when the result is built, so a pass that is thrown away (the
// rollback restart) uses none.
type pass struct {
	in    Input
	svc   *typesv1.Service
	now   time.Time
	nodes map[string]*typesv1.Node // nil when the input lists no node
	cfg   updateConfig

	current map[*typesv1.Task]bool // task spec equals the service's

	updates map[string]*typesv1.Task // id → copy with its new desired state
	deletes map[string]*typesv1.Task
	creates []slotKey
	requeue time.Duration
	status  *typesv1.UpdateStatus // new update status, nil if unchanged
}

func newPass(in Input) *pass {
	p := &pass{
		in:      in,
		svc:     in.Service,
		now:     in.Now,
		current: make(map[*typesv1.Task]bool, len(in.Tasks)),
		updates: map[string]*typesv1.Task{},
		deletes: map[string]*typesv1.Task{},
	}
	if len(in.Nodes) > 0 {
		p.nodes = make(map[string]*typesv1.Node, len(in.Nodes))
		for _, n := range in.Nodes {
			if n != nil {
				p.nodes[n.GetId()] = n
			}
		}
	}
	if p.svc != nil {
		p.cfg = newUpdateConfig(p.svc)
	}
	return p
}

// reconcile decides for a service that exists. It returns the service to
// roll back to when a failed update asks for it, and then its own decisions
// are to be discarded.
func (p *pass) reconcile() *typesv1.Service {
	slots := p.group()
	var kept []*slot
	if isGlobal(p.svc) {
		kept = p.global(slots)
	} else {
		kept = p.replicated(slots)
	}
	for _, s := range kept {
		if s.kind == kindLive {
			p.settle(s)
		}
	}
	if rb := p.rollingUpdate(slots, kept); rb != nil {
		return rb
	}
	for _, s := range kept {
		if !s.canCreate {
			continue
		}
		switch s.kind {
		case kindFree, kindRestart:
			p.creates = append(p.creates, s.key)
		case kindPending:
			p.wait(s.restartAt.Sub(p.now))
		case kindLive:
			if s.replace {
				p.creates = append(p.creates, s.key)
			}
		}
	}
	p.trimHistory(slots)
	return nil
}

// removeAll shuts down the tasks of a removed service and deletes those
// that are done. A task counts as done when it ended, when its node is lost
// (if the node comes back, its agent stops what it no longer is assigned),
// or when no node was ever chosen for it.
func (p *pass) removeAll() {
	tasks := slices.DeleteFunc(slices.Clone(p.in.Tasks), func(t *typesv1.Task) bool { return t == nil })
	slices.SortFunc(tasks, olderFirst)
	for _, t := range tasks {
		unassigned := t.GetNodeId() == "" && state(t) < typesv1.TaskState_TASK_STATE_ASSIGNED
		if IsTerminal(state(t)) || p.lost(t) || unassigned {
			p.delete(t)
		} else {
			p.shutdown(t)
		}
	}
}

// trimHistory deletes, per slot, the oldest ended tasks beyond the history
// limit. A task ended when it is terminal and no longer wanted running, as
// it will be once this result is applied, so that the next pass finds
// nothing more to trim.
func (p *pass) trimHistory(slots map[slotKey]*slot) {
	limit := p.in.HistoryLimit
	switch {
	case limit < 0:
		return
	case limit == 0:
		limit = DefaultHistoryLimit
	}
	for _, k := range sortedKeys(slots) {
		var ended []*typesv1.Task
		for _, t := range slots[k].tasks {
			if IsTerminal(state(t)) && p.desired(t) != typesv1.TaskState_TASK_STATE_RUNNING {
				ended = append(ended, t)
			}
		}
		for i := 0; i < len(ended)-limit; i++ {
			p.delete(ended[i])
		}
	}
}

// lost reports whether a task that has not ended sits on a node that is
// DOWN or was removed. swarmkit leaves such a task alone for a while and
// then marks it ORPHANED; shoal does not wait: the task is treated as ended
// at once (desired SHUTDOWN, its slot replaced under the restart policy),
// because the dispatcher only declares a node DOWN after its heartbeats
// have stopped for a grace period already.
func (p *pass) lost(t *typesv1.Task) bool {
	if p.nodes == nil || t.GetNodeId() == "" || IsTerminal(state(t)) {
		return false
	}
	n := p.nodes[t.GetNodeId()]
	return n == nil || n.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_DOWN
}

// drained reports whether a task that has not ended sits on a node being
// drained.
func (p *pass) drained(t *typesv1.Task) bool {
	if p.nodes == nil || t.GetNodeId() == "" || IsTerminal(state(t)) {
		return false
	}
	n := p.nodes[t.GetNodeId()]
	return n != nil && n.GetSpec().GetAvailability() == typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN
}

// isCurrent reports whether a task runs the service's current task spec
// (force_update included, as it is part of the spec). Cached: proto.Equal
// is the costliest thing a pass does.
func (p *pass) isCurrent(t *typesv1.Task) bool {
	c, ok := p.current[t]
	if !ok {
		c = specEqual(t.GetSpec(), p.svc.GetSpec().GetTask())
		p.current[t] = c
	}
	return c
}

// desired is a task's desired state as this result leaves it.
func (p *pass) desired(t *typesv1.Task) typesv1.TaskState {
	if u, ok := p.updates[t.GetId()]; ok {
		return u.GetDesiredState()
	}
	return t.GetDesiredState()
}

// shutdown asks a task to stop. Desired states only rise, and a task is
// written at most once per result, so asking twice is harmless.
func (p *pass) shutdown(t *typesv1.Task) {
	if _, gone := p.deletes[t.GetId()]; gone || p.desired(t) >= typesv1.TaskState_TASK_STATE_SHUTDOWN {
		return
	}
	u := proto.Clone(t).(*typesv1.Task)
	u.DesiredState = typesv1.TaskState_TASK_STATE_SHUTDOWN
	p.updates[t.GetId()] = u
}

// delete deletes a task; a deletion replaces any update of the same task.
func (p *pass) delete(t *typesv1.Task) {
	delete(p.updates, t.GetId())
	p.deletes[t.GetId()] = t
}

// wait asks to be called again after d, keeping the earliest request.
func (p *pass) wait(d time.Duration) {
	if d > 0 && (p.requeue == 0 || d < p.requeue) {
		p.requeue = d
	}
}

func (p *pass) result() Result {
	r := Result{Requeue: p.requeue}
	newID := p.in.NewID
	if newID == nil {
		newID = identity.NewID
	}
	slices.SortFunc(p.creates, compareKeys)
	for _, k := range p.creates {
		r.Create = append(r.Create, NewTask(p.svc, k.slot, k.node, p.now, newID()))
	}
	for _, u := range p.updates {
		r.Update = append(r.Update, u)
	}
	slices.SortFunc(r.Update, bySlot)
	deleted := make([]*typesv1.Task, 0, len(p.deletes))
	for _, t := range p.deletes {
		deleted = append(deleted, t)
	}
	slices.SortFunc(deleted, bySlot)
	for _, t := range deleted {
		r.Delete = append(r.Delete, t.GetId())
	}
	if p.status != nil {
		s := proto.Clone(p.svc).(*typesv1.Service)
		s.UpdateStatus = p.status
		r.ServiceUpdate = s
	}
	return r
}

// bySlot orders tasks for a readable, deterministic result.
func bySlot(a, b *typesv1.Task) int {
	return cmp.Or(
		cmp.Compare(a.GetSlot(), b.GetSlot()),
		cmp.Compare(a.GetNodeId(), b.GetNodeId()),
		olderFirst(a, b),
	)
}
