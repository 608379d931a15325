package scheduler

import (
	"strconv"
	"strings"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// NodeInfo is a node with what is placed on it. Schedule keeps it up to
// date as it places tasks, so later tasks of the same call see earlier
// ones; the manager may also keep NodeInfos between calls with AddTask and
// RemoveTask. A NodeInfo is not safe for concurrent use.
type NodeInfo struct {
	Node *typesv1.Node

	// Tasks are the tasks that hold something on the node: placed (state
	// ASSIGNED or later, or placed by this package) and not yet ended
	// (state before COMPLETE). A task told to shut down is still here until
	// it has stopped, because until then its memory and host ports are in
	// use.
	Tasks map[string]*typesv1.Task

	// ServiceTasks counts, per service id, the tasks in Tasks that are
	// meant to keep running (desired state RUNNING or earlier); ActiveTasks
	// is their total. Spread and max_replicas look at these: a task on its
	// way out should not push new ones away.
	ServiceTasks map[string]int
	ActiveTasks  int

	// Available is the node's resources minus the reservations of Tasks;
	// it goes negative when a node reports less than is reserved on it.
	Available typesv1.Resources

	// HostPorts holds "tcp/8080" for each host-mode published port that a
	// task in Tasks uses.
	HostPorts map[string]bool
}

// NewNodeInfo builds the NodeInfo of n from the tasks whose node id is n's.
// Tasks of another node, ended tasks (state COMPLETE or later) and tasks not
// yet placed (state NEW or PENDING, such as a global task created with its
// node id) are left out: the last are what CheckNode decides about, and
// counting them too would make two pending tasks that fit the node only one
// at a time refuse each other.
func NewNodeInfo(n *typesv1.Node, tasks []*typesv1.Task) *NodeInfo {
	ni := &NodeInfo{
		Node:         n,
		Tasks:        make(map[string]*typesv1.Task),
		ServiceTasks: make(map[string]int),
		HostPorts:    make(map[string]bool),
	}
	res := n.GetDescription().GetResources()
	ni.Available.NanoCpus = res.GetNanoCpus()
	ni.Available.MemoryBytes = res.GetMemoryBytes()
	ni.Available.Pids = res.GetPids()
	for _, t := range tasks {
		if t == nil || (t.GetNodeId() != "" && t.GetNodeId() != n.GetId()) {
			continue
		}
		if t.GetStatus().GetState() < typesv1.TaskState_TASK_STATE_ASSIGNED {
			continue
		}
		ni.AddTask(t)
	}
	return ni
}

// ID returns the node's id.
func (ni *NodeInfo) ID() string { return ni.Node.GetId() }

// AddTask records t as placed on the node. A task already recorded is
// replaced, so a task whose desired state changed is counted anew. An
// ended task (state COMPLETE or later) holds nothing and is removed
// instead. It reports whether t is now recorded.
func (ni *NodeInfo) AddTask(t *typesv1.Task) bool {
	if old, ok := ni.Tasks[t.GetId()]; ok {
		ni.RemoveTask(old)
	}
	if t.GetStatus().GetState() >= typesv1.TaskState_TASK_STATE_COMPLETE {
		return false
	}
	ni.Tasks[t.GetId()] = t
	r := t.GetSpec().GetResources().GetReservations()
	ni.Available.NanoCpus -= r.GetNanoCpus()
	ni.Available.MemoryBytes -= r.GetMemoryBytes()
	for _, p := range hostPorts(t) {
		ni.HostPorts[p] = true
	}
	if active(t) {
		ni.ServiceTasks[t.GetServiceId()]++
		ni.ActiveTasks++
	}
	return true
}

// RemoveTask forgets the task with t's id; it reports whether there was one.
func (ni *NodeInfo) RemoveTask(t *typesv1.Task) bool {
	old, ok := ni.Tasks[t.GetId()]
	if !ok {
		return false
	}
	delete(ni.Tasks, old.GetId())
	r := old.GetSpec().GetResources().GetReservations()
	ni.Available.NanoCpus += r.GetNanoCpus()
	ni.Available.MemoryBytes += r.GetMemoryBytes()
	if active(old) {
		ni.ActiveTasks--
		if ni.ServiceTasks[old.GetServiceId()]--; ni.ServiceTasks[old.GetServiceId()] <= 0 {
			delete(ni.ServiceTasks, old.GetServiceId())
		}
	}
	if len(hostPorts(old)) > 0 {
		// Rebuilt rather than deleted: if stale state put two tasks on
		// the same port, the port stays taken while either remains.
		clear(ni.HostPorts)
		for _, t := range ni.Tasks {
			for _, p := range hostPorts(t) {
				ni.HostPorts[p] = true
			}
		}
	}
	return true
}

// clone copies ni deeply enough that adding and removing tasks on the copy
// leaves ni alone; the tasks and node themselves are shared.
func (ni *NodeInfo) clone() *NodeInfo {
	c := &NodeInfo{
		Node:         ni.Node,
		Tasks:        make(map[string]*typesv1.Task, len(ni.Tasks)),
		ServiceTasks: make(map[string]int, len(ni.ServiceTasks)),
		ActiveTasks:  ni.ActiveTasks,
		HostPorts:    make(map[string]bool, len(ni.HostPorts)),
	}
	c.Available.NanoCpus = ni.Available.NanoCpus
	c.Available.MemoryBytes = ni.Available.MemoryBytes
	c.Available.Pids = ni.Available.Pids
	for k, v := range ni.Tasks {
		c.Tasks[k] = v
	}
	for k, v := range ni.ServiceTasks {
		c.ServiceTasks[k] = v
	}
	for k, v := range ni.HostPorts {
		c.HostPorts[k] = v
	}
	return c
}

// active reports whether t is meant to keep running, as opposed to a task
// being shut down or removed.
func active(t *typesv1.Task) bool {
	return t.GetDesiredState() <= typesv1.TaskState_TASK_STATE_RUNNING
}

// hostPorts returns the "tcp/8080" keys of t's host-mode published ports.
// The allocator copies the service's ports into the task's endpoint; until
// it has, the spec's ports are what the task will publish. A host-mode port
// with published port 0 is picked by the node at start and cannot clash.
func hostPorts(t *typesv1.Task) []string {
	ports := t.GetEndpoint().GetPorts()
	if len(ports) == 0 {
		ports = t.GetEndpoint().GetSpec().GetPorts()
	}
	var out []string
	for _, p := range ports {
		if p.GetPublishMode() == typesv1.PortConfig_PUBLISH_MODE_HOST && p.GetPublishedPort() != 0 {
			out = append(out, hostPortKey(p.GetProtocol(), p.GetPublishedPort()))
		}
	}
	return out
}

// hostPortKey is "tcp/8080", the form of NodeInfo.HostPorts keys.
func hostPortKey(proto typesv1.PortConfig_Protocol, port uint32) string {
	var name string
	switch proto {
	case typesv1.PortConfig_PROTOCOL_TCP:
		name = "tcp"
	case typesv1.PortConfig_PROTOCOL_UDP:
		name = "udp"
	case typesv1.PortConfig_PROTOCOL_SCTP:
		name = "sctp"
	default:
		name = strings.ToLower(strings.TrimPrefix(proto.String(), "PROTOCOL_"))
	}
	return name + "/" + strconv.FormatUint(uint64(port), 10)
}
