// Package scheduler decides which node runs each task that waits for one.
//
// It is pure: given the nodes with what is placed on them and the tasks to
// place, it returns a decision per task, with no I/O, clock or randomness,
// so that the same input always gives the same decisions. A loop in the
// manager feeds it from the store and writes the decisions back.
//
// A task goes through a pipeline of filters (ready, availability,
// resources, constraints, host ports, max replicas per node), as in
// swarmkit. Among the nodes that pass, it goes where its service has the
// fewest tasks, then where there are fewest tasks at all, then to the
// lowest node id; placement preferences ("spread=node.labels.zone") first
// even the service's tasks out over the label's values.
package scheduler

import (
	"cmp"
	"slices"
	"strings"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Decision is where one task goes, or why it goes nowhere.
type Decision struct {
	TaskID string
	// NodeID is the chosen node; "" when no node fits.
	NodeID string
	// Reason, when NodeID is "", is what the task's status should say,
	// e.g. "no suitable node (insufficient memory on 1 node; scheduling
	// constraints not satisfied on 2 nodes)", or just "no suitable node"
	// when there are no nodes at all.
	Reason string
}

// Schedule places tasks onto nodes and returns one decision per task, in
// the order it placed them: by service id, then slot, then task id. That
// order, and a node-id tie-break, make the result independent of the order
// of both slices. Placing a task records it on the chosen NodeInfo, so the
// tasks after it see its reservations, host ports and spread; the tasks
// themselves are not modified.
//
// The caller passes the tasks that wait for a node (state PENDING, desired
// state RUNNING); task ids must be unique. A task that already names its
// node, as a global service's task does, is only checked against that node
// (see CheckNode) and never moved to another.
func Schedule(nodes []*NodeInfo, tasks []*typesv1.Task) []Decision {
	ordered := make([]*typesv1.Task, 0, len(tasks))
	for _, t := range tasks {
		if t != nil {
			ordered = append(ordered, t)
		}
	}
	slices.SortFunc(ordered, func(a, b *typesv1.Task) int {
		return cmp.Or(
			cmp.Compare(a.GetServiceId(), b.GetServiceId()),
			cmp.Compare(a.GetSlot(), b.GetSlot()),
			cmp.Compare(a.GetId(), b.GetId()),
		)
	})

	s := &scheduler{p: newPipeline(), byID: make(map[string]*NodeInfo, len(nodes))}
	for _, n := range nodes {
		if n != nil {
			s.nodes = append(s.nodes, n)
			s.byID[n.ID()] = n
		}
	}
	out := make([]Decision, 0, len(ordered))
	for _, t := range ordered {
		out = append(out, s.place(t))
	}
	return out
}

// scheduler is the state of one Schedule call.
type scheduler struct {
	nodes   []*NodeInfo
	byID    map[string]*NodeInfo
	p       *pipeline
	passing []*NodeInfo // scratch, reused across tasks

	// prefs are the parsed placement preferences of lastPrefs; tasks come
	// grouped by service, so consecutive tasks nearly always share them.
	lastPrefs []string
	prefs     []Preference
}

// place decides t's node and records t there.
func (s *scheduler) place(t *typesv1.Task) Decision {
	d := Decision{TaskID: t.GetId()}
	if id := t.GetNodeId(); id != "" {
		n := s.byID[id]
		if n == nil {
			d.Reason = noSuitableNode + " (node " + id + " not found)"
			return d
		}
		ok, reason := s.p.checkNode(n, t)
		if !ok {
			d.Reason = reason
			return d
		}
		n.AddTask(t)
		d.NodeID = id
		return d
	}

	s.p.setTask(t)
	s.passing = s.passing[:0]
	for _, n := range s.nodes {
		if s.p.process(n) {
			s.passing = append(s.passing, n)
		}
	}
	if len(s.passing) == 0 {
		d.Reason = s.p.explain()
		return d
	}
	best := s.choose(t)
	best.AddTask(t)
	d.NodeID = best.ID()
	return d
}

// choose picks among s.passing, which is not empty.
func (s *scheduler) choose(t *typesv1.Task) *NodeInfo {
	svc := t.GetServiceId()
	prefs := s.preferences(t)
	if len(prefs) == 0 {
		best := s.passing[0]
		for _, n := range s.passing[1:] {
			if less(n, best, svc) {
				best = n
			}
		}
		return best
	}

	// groups[i][path] counts the service's tasks in the group of nodes
	// whose values for preferences 0..i are path: swarmkit's decision
	// tree, one level per preference. Choosing, for each task, the node
	// whose groups hold the fewest tasks, level by level, evens the tasks
	// out as swarmkit does for a whole batch.
	//
	// The groups are made of the nodes the service may run on (ready,
	// active, constraints met) whether or not they have room for this
	// task: a full node's tasks still weigh on its group, otherwise its
	// neighbours would be given its share on top of theirs.
	groups := make([]map[string]int, len(prefs))
	for i := range groups {
		groups[i] = make(map[string]int)
	}
	var path strings.Builder
	for _, n := range s.nodes {
		if !s.p.inDomain(n) {
			continue
		}
		c := n.ServiceTasks[svc]
		path.Reset()
		for i, pr := range prefs {
			path.WriteByte(0)
			path.WriteString(pr.value(n.Node))
			groups[i][path.String()] += c
		}
	}

	var best *NodeInfo
	bestKey := make([]int, len(prefs))
	key := make([]int, len(prefs))
	for _, n := range s.passing {
		path.Reset()
		for i, pr := range prefs {
			path.WriteByte(0)
			path.WriteString(pr.value(n.Node))
			key[i] = groups[i][path.String()]
		}
		if best == nil {
			best = n
			copy(bestKey, key)
			continue
		}
		if c := slices.Compare(key, bestKey); c < 0 || (c == 0 && less(n, best, svc)) {
			best = n
			copy(bestKey, key)
		}
	}
	return best
}

// preferences returns t's parsed placement preferences. Invalid ones are
// ignored rather than failing the task: they are a wish, not a rule, and
// the control API refuses them up front with ParsePreferences.
func (s *scheduler) preferences(t *typesv1.Task) []Preference {
	raw := t.GetSpec().GetPlacement().GetPreferences()
	if len(raw) == 0 {
		return nil
	}
	if s.lastPrefs == nil || !slices.Equal(s.lastPrefs, raw) {
		s.lastPrefs = slices.Clone(raw)
		s.prefs, _ = ParsePreferences(raw)
	}
	return s.prefs
}

// less orders candidate nodes for a task of service svc: fewest tasks of
// the service, then fewest tasks, then node id so that ties never depend
// on input order.
func less(a, b *NodeInfo, svc string) bool {
	if x, y := a.ServiceTasks[svc], b.ServiceTasks[svc]; x != y {
		return x < y
	}
	if a.ActiveTasks != b.ActiveTasks {
		return a.ActiveTasks < b.ActiveTasks
	}
	return a.ID() < b.ID()
}
