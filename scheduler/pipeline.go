package scheduler

import (
	"strings"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// noSuitableNode begins every explanation, as in Docker, so that tools
// which look for it in `service ps` output keep working.
const noSuitableNode = "no suitable node"

// pipeline runs the filters in order and stops at the first that fails a
// node, counting failures per filter for the explanation. It is swarmkit's
// Pipeline, with the explanation listing filters in pipeline order rather
// than by failure count, so that the same cluster always reads the same.
type pipeline struct {
	checks []check

	// Typed handles on the filters that also decide which nodes form a
	// service's spread groups (see scheduler.choose).
	ready        *ReadyFilter
	availability *AvailabilityFilter
	constraint   *ConstraintFilter
	// constraintIdx is the constraint filter's place in checks.
	constraintIdx int
}

type check struct {
	f        Filter
	enabled  bool
	failures int
}

// newPipeline returns the filters in the order users read them in an
// explanation: is the node usable at all, then does the task fit.
func newPipeline() *pipeline {
	p := &pipeline{
		ready:        &ReadyFilter{},
		availability: &AvailabilityFilter{},
		constraint:   &ConstraintFilter{},
	}
	for _, f := range []Filter{
		p.ready,
		p.availability,
		&ResourceFilter{},
		p.constraint,
		&HostPortFilter{},
		&MaxReplicasFilter{},
	} {
		if f == Filter(p.constraint) {
			p.constraintIdx = len(p.checks)
		}
		p.checks = append(p.checks, check{f: f})
	}
	return p
}

// setTask prepares every filter for t and clears the failure counts.
func (p *pipeline) setTask(t *typesv1.Task) {
	for i := range p.checks {
		p.checks[i].enabled = p.checks[i].f.SetTask(t)
		p.checks[i].failures = 0
	}
}

// process reports whether n passes every filter that applies to the task.
func (p *pipeline) process(n *NodeInfo) bool {
	for i := range p.checks {
		c := &p.checks[i]
		if c.enabled && !c.f.Check(n) {
			c.failures++
			return false
		}
	}
	return true
}

// inDomain reports whether the task set last may ever run on n, room
// aside: n is ready, active and meets the constraints.
func (p *pipeline) inDomain(n *NodeInfo) bool {
	if !p.ready.Check(n) || !p.availability.Check(n) {
		return false
	}
	// For a task without constraints the filter's SetTask returned false
	// and its state is the previous task's: it must not be consulted.
	return !p.checks[p.constraintIdx].enabled || p.constraint.Check(n)
}

// explain is the reason a task stays unassigned: "no suitable node (…; …)"
// listing each filter that failed some node.
func (p *pipeline) explain() string {
	var parts []string
	for _, c := range p.checks {
		if c.failures > 0 {
			parts = append(parts, c.f.Explain(c.failures))
		}
	}
	if len(parts) == 0 {
		return noSuitableNode
	}
	return noSuitableNode + " (" + strings.Join(parts, "; ") + ")"
}

// CheckNode runs the placement pipeline for a task that already has its
// node, such as a global service's task, which is created for one node.
// When ok is false, reason reads like Schedule's, e.g. "no suitable node
// (insufficient memory on 1 node)", and belongs in the task's status.
// CheckNode does not record t on n; once the task is assigned, the caller
// calls n.AddTask(t) so that the next check sees it.
func CheckNode(n *NodeInfo, t *typesv1.Task) (ok bool, reason string) {
	return newPipeline().checkNode(n, t)
}

// checkNode runs the pipeline for t on n alone.
func (p *pipeline) checkNode(n *NodeInfo, t *typesv1.Task) (ok bool, reason string) {
	if _, placed := n.Tasks[t.GetId()]; placed {
		// The task must not compete with itself for memory or ports.
		n = n.clone()
		n.RemoveTask(t)
	}
	p.setTask(t)
	if p.process(n) {
		return true, ""
	}
	return false, p.explain()
}
