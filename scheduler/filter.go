package scheduler

import (
	"fmt"
	"slices"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Filter is one check of the placement pipeline. The pipeline gives a
// filter the task with SetTask, then asks Check for node after node, and
// when no node passes it asks every filter that failed some node to
// Explain, with the number of nodes it failed. Users read the explanation
// in `service ps`, so its wording follows Docker's.
type Filter interface {
	// SetTask prepares the filter for t; false means the filter does not
	// apply to t (a task without constraints, say) and is skipped.
	SetTask(t *typesv1.Task) bool
	// Check reports whether the task given to SetTask may run on n.
	Check(n *NodeInfo) bool
	// Explain says why the filter failed the task on the given number of
	// nodes, e.g. "insufficient memory on 2 nodes".
	Explain(nodes int) string
}

// Filters in pipeline order. PluginFilter of swarmkit has no counterpart:
// shoal's volume and network drivers are built in, so every node has them.
var (
	_ Filter = (*ReadyFilter)(nil)
	_ Filter = (*AvailabilityFilter)(nil)
	_ Filter = (*ResourceFilter)(nil)
	_ Filter = (*ConstraintFilter)(nil)
	_ Filter = (*HostPortFilter)(nil)
	_ Filter = (*MaxReplicasFilter)(nil)
)

// nodes is "1 node" or "N nodes".
func nodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

// ReadyFilter passes nodes whose state is READY: a node that is down,
// disconnected or not yet heard from cannot start anything.
type ReadyFilter struct{}

// SetTask applies the filter to every task.
func (f *ReadyFilter) SetTask(*typesv1.Task) bool { return true }

// Check reports whether n is ready.
func (f *ReadyFilter) Check(n *NodeInfo) bool {
	return n.Node.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY
}

// Explain returns "N nodes not ready". Docker folds this case into "not
// available for new tasks"; shoal says which of the two it is, so that a
// user does not drain-check a node that is simply down.
func (f *ReadyFilter) Explain(n int) string { return nodes(n) + " not ready" }

// AvailabilityFilter passes nodes whose availability is ACTIVE: an operator
// pauses or drains a node to keep new tasks off it.
type AvailabilityFilter struct{}

// SetTask applies the filter to every task.
func (f *AvailabilityFilter) SetTask(*typesv1.Task) bool { return true }

// Check reports whether n takes new tasks.
func (f *AvailabilityFilter) Check(n *NodeInfo) bool {
	return n.Node.GetSpec().GetAvailability() == typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE
}

// Explain returns Docker's "N nodes not available for new tasks".
func (f *AvailabilityFilter) Explain(n int) string {
	return nodes(n) + " not available for new tasks"
}

// ResourceFilter passes nodes whose unreserved CPU and memory cover the
// task's reservations.
type ResourceFilter struct {
	cpus, memory int64
	// cpuShort records that some node failed for lack of CPU, so that
	// Explain can name memory when memory alone was short.
	cpuShort bool
}

// SetTask applies the filter to tasks that reserve CPU or memory.
func (f *ResourceFilter) SetTask(t *typesv1.Task) bool {
	r := t.GetSpec().GetResources().GetReservations()
	f.cpus, f.memory, f.cpuShort = r.GetNanoCpus(), r.GetMemoryBytes(), false
	return f.cpus > 0 || f.memory > 0
}

// Check reports whether the reservations fit in n.Available.
func (f *ResourceFilter) Check(n *NodeInfo) bool {
	if f.cpus > n.Available.NanoCpus {
		f.cpuShort = true
		return false
	}
	return f.memory <= n.Available.MemoryBytes
}

// Explain returns "insufficient memory on N nodes" when memory was what
// every failing node lacked, and Docker's "insufficient resources on N
// nodes" when CPU was short somewhere.
func (f *ResourceFilter) Explain(n int) string {
	if f.cpuShort {
		return "insufficient resources on " + nodes(n)
	}
	return "insufficient memory on " + nodes(n)
}

// ConstraintFilter passes nodes that satisfy the task's placement
// constraints.
type ConstraintFilter struct {
	constraints []Constraint
	// err is set when the constraints do not parse. Swarmkit then ignores
	// them and places the task anywhere; shoal places it nowhere and says
	// why, because running a task where the user said not to is worse than
	// not running it.
	err error
	// last is the expression list parsed last: tasks come grouped by
	// service, so consecutive tasks nearly always share it.
	last []string
}

// SetTask applies the filter to tasks with placement constraints.
func (f *ConstraintFilter) SetTask(t *typesv1.Task) bool {
	exprs := t.GetSpec().GetPlacement().GetConstraints()
	if len(exprs) == 0 {
		return false
	}
	if f.last == nil || !slices.Equal(f.last, exprs) {
		f.constraints, f.err = ParseConstraints(exprs)
		f.last = slices.Clone(exprs)
	}
	return true
}

// Check reports whether n satisfies all constraints.
func (f *ConstraintFilter) Check(n *NodeInfo) bool {
	return f.err == nil && NodeMatches(f.constraints, n.Node)
}

// Explain returns Docker's "scheduling constraints not satisfied on N
// nodes", or the parse error when the constraints are invalid.
func (f *ConstraintFilter) Explain(n int) string {
	if f.err != nil {
		return f.err.Error()
	}
	return "scheduling constraints not satisfied on " + nodes(n)
}

// HostPortFilter passes nodes where none of the task's host-mode published
// ports is taken by another task.
type HostPortFilter struct {
	ports []string
}

// SetTask applies the filter to tasks that publish a port in host mode.
func (f *HostPortFilter) SetTask(t *typesv1.Task) bool {
	f.ports = hostPorts(t)
	return len(f.ports) > 0
}

// Check reports whether all the task's host ports are free on n.
func (f *HostPortFilter) Check(n *NodeInfo) bool {
	for _, p := range f.ports {
		if n.HostPorts[p] {
			return false
		}
	}
	return true
}

// Explain returns Docker's "host-mode port already in use on N nodes".
func (f *HostPortFilter) Explain(n int) string {
	return "host-mode port already in use on " + nodes(n)
}

// MaxReplicasFilter passes nodes that run fewer than placement.max_replicas
// tasks of the task's service.
type MaxReplicasFilter struct {
	service string
	max     uint64
}

// SetTask applies the filter to tasks whose service sets max_replicas.
func (f *MaxReplicasFilter) SetTask(t *typesv1.Task) bool {
	f.service, f.max = t.GetServiceId(), t.GetSpec().GetPlacement().GetMaxReplicas()
	return f.max > 0
}

// Check reports whether n has room for one more task of the service.
func (f *MaxReplicasFilter) Check(n *NodeInfo) bool {
	return uint64(n.ServiceTasks[f.service]) < f.max
}

// Explain returns Docker's wording, which carries no node count.
func (f *MaxReplicasFilter) Explain(int) string {
	return "max replicas per node limit exceed"
}
