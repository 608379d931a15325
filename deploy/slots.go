package deploy

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// slotKey names a slot: its number for a replicated service, its node for a
// global one.
type slotKey struct {
	slot uint64
	node string
}

func compareKeys(a, b slotKey) int {
	return cmp.Or(cmp.Compare(a.slot, b.slot), cmp.Compare(a.node, b.node))
}

func sortedKeys(slots map[slotKey]*slot) []slotKey {
	return slices.SortedFunc(maps.Keys(slots), compareKeys)
}

// slotKind is what a slot needs, derived from its tasks alone.
type slotKind int

const (
	// kindFree: nothing runs and nothing is owed; the slot can be filled
	// now. No task yet, or the last one was stopped on purpose (scale
	// down, drain, update) rather than ending by itself.
	kindFree slotKind = iota
	// kindLive: a task runs or is on its way to running.
	kindLive
	// kindRestart: the last task ended by itself and the restart policy
	// wants a replacement now.
	kindRestart
	// kindPending: as kindRestart, once the restart delay has passed.
	kindPending
	// kindDone: the last task ended by itself and the restart policy
	// wants no replacement (condition, or max_attempts reached).
	kindDone
)

type slot struct {
	key   slotKey
	tasks []*typesv1.Task // all tasks of the slot, oldest first
	// live are the tasks wanted running that have not ended and are not
	// on a lost or drained node, oldest first. Usually one; two while a
	// start-first update overlaps the old task and the new.
	live      []*typesv1.Task
	kind      slotKind
	restartAt time.Time // kindPending: when the replacement is due

	// canCreate: a new task may be created in this slot. Always for a
	// replicated slot that is kept; for a global one, when its node
	// takes new tasks (a paused node keeps its task but gets no new one).
	canCreate bool
	// keeper is the live task that stays once duplicates are shut down.
	keeper *typesv1.Task
	// outdated: the slot runs only tasks of another spec.
	outdated bool
	// replace: the rolling update creates a task of the current spec in
	// this slot now.
	replace bool
}

// group sorts the tasks into slots and stops the ones that are wanted
// running but cannot run: those that ended or whose node is lost (their
// slot then decides on a replacement) and, for a replicated service, those
// on a draining node (moved elsewhere at once).
func (p *pass) group() map[slotKey]*slot {
	global := isGlobal(p.svc)
	slots := map[slotKey]*slot{}
	for _, t := range p.in.Tasks {
		if t == nil || (t.GetServiceId() != "" && p.svc.GetId() != "" && t.GetServiceId() != p.svc.GetId()) {
			continue
		}
		k := slotKey{slot: t.GetSlot()}
		if global {
			k = slotKey{node: t.GetNodeId()}
		}
		s := slots[k]
		if s == nil {
			s = &slot{key: k}
			slots[k] = s
		}
		s.tasks = append(s.tasks, t)
	}
	for _, k := range sortedKeys(slots) {
		s := slots[k]
		slices.SortFunc(s.tasks, olderFirst)
		for _, t := range s.tasks {
			if t.GetDesiredState() != typesv1.TaskState_TASK_STATE_RUNNING {
				continue
			}
			switch {
			case IsTerminal(state(t)) || p.lost(t):
				p.shutdown(t)
			case !global && p.drained(t):
				// swarmkit moves a drained node's tasks through
				// its restart supervisor, so a restart policy of
				// "none" leaves them stopped. Draining is an
				// operator's move, not a task's failure: the task
				// is stopped and its slot refilled at once (see
				// classify), whatever the policy.
				p.shutdown(t)
			default:
				s.live = append(s.live, t)
			}
		}
	}
	return slots
}

// classify decides what a slot needs from its tasks alone, so that the
// decision is the same on every pass until a task changes.
func (p *pass) classify(s *slot) {
	if len(s.live) > 0 {
		s.kind = kindLive
		return
	}
	if len(s.tasks) == 0 {
		s.kind = kindFree
		return
	}
	last := s.tasks[len(s.tasks)-1]
	if !p.endedByItself(last) || !p.isCurrent(last) {
		// A task stopped on purpose is replaced without delay: there
		// is no crash loop to slow down. A task of an older spec that
		// ended is replaced by one of the current spec at once too:
		// the restart policy paces retries of one spec, and Docker
		// reruns finished tasks when their service is updated.
		s.kind = kindFree
		return
	}
	if !p.restartAllowed(s, last) {
		s.kind = kindDone
		return
	}
	s.restartAt = statusTime(last).Add(p.restartDelay())
	if p.now.Before(s.restartAt) {
		s.kind = kindPending
	} else {
		s.kind = kindRestart
	}
}

// endedByItself reports whether a task that is no longer live ended
// without being asked to: it completed, failed, was rejected or orphaned,
// or its node is lost. A task that reports SHUTDOWN (or REMOVE) was stopped
// by the agent on request, and a task that has not ended on a healthy node
// is still stopping on request.
func (p *pass) endedByItself(t *typesv1.Task) bool {
	if st := state(t); IsTerminal(st) {
		return st != typesv1.TaskState_TASK_STATE_SHUTDOWN && st != typesv1.TaskState_TASK_STATE_REMOVE
	}
	return p.lost(t)
}

// replicated keeps the slots a replicated service wants: it counts the
// slots that hold a task or owe one (live, restarting, done), shuts down
// the surplus and picks free slot numbers for the missing ones. Slot
// numbers may have holes after a scale down, as in swarmkit.
func (p *pass) replicated(slots map[slotKey]*slot) []*slot {
	replicas := int(p.svc.GetSpec().GetReplicated().GetReplicas())
	var occupied []*slot
	taken := map[uint64]bool{}
	for _, k := range sortedKeys(slots) {
		s := slots[k]
		p.classify(s)
		s.canCreate = true
		if s.kind != kindFree {
			occupied = append(occupied, s)
			taken[s.key.slot] = true
		}
	}
	if len(occupied) > replicas {
		// Drop what costs least first, as swarmkit prefers tasks
		// that are not running: slots that are done, then slots
		// waiting for a restart, then tasks still starting, then
		// running ones; among equals the highest slot.
		slices.SortStableFunc(occupied, func(a, b *slot) int {
			return cmp.Or(cmp.Compare(dropRank(a), dropRank(b)), cmp.Compare(b.key.slot, a.key.slot))
		})
		for _, s := range occupied[:len(occupied)-replicas] {
			for _, t := range s.live {
				p.shutdown(t)
			}
		}
		kept := occupied[len(occupied)-replicas:]
		slices.SortFunc(kept, func(a, b *slot) int { return compareKeys(a.key, b.key) })
		return kept
	}
	kept := occupied
	for n := uint64(1); len(kept) < replicas; n++ {
		if taken[n] {
			continue
		}
		s := slots[slotKey{slot: n}]
		if s == nil {
			s = &slot{key: slotKey{slot: n}, canCreate: true}
			slots[s.key] = s
		}
		kept = append(kept, s)
	}
	slices.SortFunc(kept, func(a, b *slot) int { return compareKeys(a.key, b.key) })
	return kept
}

func dropRank(s *slot) int {
	switch s.kind {
	case kindDone:
		return 0
	case kindPending, kindRestart:
		return 1
	}
	for _, t := range s.live {
		if state(t) == typesv1.TaskState_TASK_STATE_RUNNING {
			return 3
		}
	}
	return 2
}

// global keeps one slot per node that wants the service: not DOWN or
// removed, not draining, and matching Eligible. A paused node, or one that
// is not READY but not DOWN either, keeps the task it has but gets no new
// one. Nodes that do not want the service get their tasks shut down.
func (p *pass) global(slots map[slotKey]*slot) []*slot {
	eligible := p.in.Eligible
	if eligible == nil {
		eligible = defaultEligible
	}
	tmpl := NewTask(p.svc, 0, "", p.now, "")
	ids := map[string]bool{}
	for k := range slots {
		ids[k.node] = true
	}
	for id := range p.nodes {
		ids[id] = true
	}
	var kept []*slot
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		k := slotKey{node: id}
		s := slots[k]
		if s == nil {
			s = &slot{key: k}
			slots[k] = s
		}
		node := p.nodes[id]
		switch {
		case node == nil && p.nodes != nil:
			// Removed: its tasks are lost and were stopped; a
			// task with no node at all has no place either.
			for _, t := range s.live {
				p.shutdown(t)
			}
			continue
		case node == nil:
			// Nodes unknown: leave what runs, start nothing.
			p.classify(s)
			kept = append(kept, s)
			continue
		case node.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_DOWN:
			continue
		}
		s.canCreate = eligible(node, tmpl)
		fits := s.canCreate
		if !fits && node.GetSpec().GetAvailability() != typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN {
			// Would it take the task if it were ready and active?
			// Then only readiness or a pause keeps a new task off,
			// and the task it has stays.
			fits = eligible(readyActive(node), tmpl)
		}
		if !fits {
			for _, t := range s.live {
				p.shutdown(t)
			}
			continue
		}
		p.classify(s)
		kept = append(kept, s)
	}
	return kept
}

func defaultEligible(n *typesv1.Node, _ *typesv1.Task) bool {
	return n.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY &&
		n.GetSpec().GetAvailability() == typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE
}

func readyActive(n *typesv1.Node) *typesv1.Node {
	c := proto.Clone(n).(*typesv1.Node)
	if c.Status == nil {
		c.Status = &typesv1.NodeStatus{}
	}
	c.Status.State = typesv1.NodeState_NODE_STATE_READY
	if c.Spec == nil {
		c.Spec = &typesv1.NodeSpec{}
	}
	c.Spec.Availability = typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE
	return c
}

// settle picks the task a live slot keeps and stops the others: duplicate
// tasks of one spec (a lost race), and the old task of a start-first
// update once the new one runs. With stop-first, or without an update,
// a task of the current spec always wins over an old one at once.
func (p *pass) settle(s *slot) {
	var cur, old []*typesv1.Task
	for _, t := range s.live {
		if p.isCurrent(t) {
			cur = append(cur, t)
		} else {
			old = append(old, t)
		}
	}
	if len(cur) == 0 {
		s.keeper = p.keepBest(old)
		s.outdated = true
		return
	}
	s.keeper = p.keepBest(cur)
	if len(old) == 0 {
		return
	}
	if state(s.keeper) == typesv1.TaskState_TASK_STATE_RUNNING || !p.cfg.startFirst {
		for _, t := range old {
			p.shutdown(t)
		}
		return
	}
	p.keepBest(old)
}

// keepBest returns the task furthest on its way to running (the newest
// among equals) and shuts down the others.
func (p *pass) keepBest(ts []*typesv1.Task) *typesv1.Task {
	best := slices.MaxFunc(ts, func(a, b *typesv1.Task) int {
		return cmp.Or(cmp.Compare(state(a), state(b)), olderFirst(a, b))
	})
	for _, t := range ts {
		if t != best {
			p.shutdown(t)
		}
	}
	return best
}
