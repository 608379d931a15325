package scheduler

import (
	"strconv"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Fixture factories in the style of nomad's mock package: a node or task
// that is ordinary unless an option says otherwise, so that each test
// spells out only what it is about.

const (
	cpu = int64(1e9) // one CPU in nano CPUs
	mib = int64(1 << 20)
	gib = int64(1 << 30)
)

type nodeOpt func(*typesv1.Node)

// node is a ready, active worker with 4 CPUs and 8 GiB, hostname = id.
func node(id string, opts ...nodeOpt) *typesv1.Node {
	n := &typesv1.Node{
		Id: id,
		Spec: &typesv1.NodeSpec{
			Annotations:  &typesv1.Annotations{Name: id},
			Availability: typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE,
		},
		Description: &typesv1.NodeDescription{
			Hostname:     id,
			Os:           "linux",
			Architecture: "amd64",
			Resources:    &typesv1.Resources{NanoCpus: 4 * cpu, MemoryBytes: 8 * gib},
		},
		Status: &typesv1.NodeStatus{State: typesv1.NodeState_NODE_STATE_READY},
		Role:   typesv1.NodeRole_NODE_ROLE_WORKER,
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func withLabels(kv ...string) nodeOpt {
	return func(n *typesv1.Node) {
		if n.Spec.Annotations.Labels == nil {
			n.Spec.Annotations.Labels = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Spec.Annotations.Labels[kv[i]] = kv[i+1]
		}
	}
}

func withState(s typesv1.NodeState) nodeOpt {
	return func(n *typesv1.Node) { n.Status.State = s }
}

func withAvailability(a typesv1.NodeAvailability) nodeOpt {
	return func(n *typesv1.Node) { n.Spec.Availability = a }
}

func withResources(nanoCPUs, memory int64) nodeOpt {
	return func(n *typesv1.Node) {
		n.Description.Resources = &typesv1.Resources{NanoCpus: nanoCPUs, MemoryBytes: memory}
	}
}

func asManager() nodeOpt {
	return func(n *typesv1.Node) { n.Role = typesv1.NodeRole_NODE_ROLE_MANAGER }
}

func withHostname(h string) nodeOpt {
	return func(n *typesv1.Node) { n.Description.Hostname = h }
}

func withPlatform(os, arch string) nodeOpt {
	return func(n *typesv1.Node) { n.Description.Os, n.Description.Architecture = os, arch }
}

func withAddr(a string) nodeOpt {
	return func(n *typesv1.Node) { n.Status.Addr = a }
}

type taskOpt func(*typesv1.Task)

// task is a pending task of service svc in slot slot, desired RUNNING,
// without reservations, constraints or ports.
func task(id, svc string, slot uint64, opts ...taskOpt) *typesv1.Task {
	t := &typesv1.Task{
		Id:        id,
		ServiceId: svc,
		Slot:      slot,
		Spec: &typesv1.TaskSpec{
			Container: &typesv1.ContainerSpec{Image: "nginx"},
			Placement: &typesv1.Placement{},
		},
		Status:       &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_PENDING},
		DesiredState: typesv1.TaskState_TASK_STATE_RUNNING,
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

func reserve(nanoCPUs, memory int64) taskOpt {
	return func(t *typesv1.Task) {
		t.Spec.Resources = &typesv1.ResourceRequirements{
			Reservations: &typesv1.Resources{NanoCpus: nanoCPUs, MemoryBytes: memory},
		}
	}
}

func constraints(c ...string) taskOpt {
	return func(t *typesv1.Task) { t.Spec.Placement.Constraints = c }
}

func prefs(p ...string) taskOpt {
	return func(t *typesv1.Task) { t.Spec.Placement.Preferences = p }
}

func maxReplicas(n uint64) taskOpt {
	return func(t *typesv1.Task) { t.Spec.Placement.MaxReplicas = n }
}

// publish adds a published port to the task's allocated endpoint.
func publish(proto typesv1.PortConfig_Protocol, port uint32, mode typesv1.PortConfig_PublishMode) taskOpt {
	return func(t *typesv1.Task) {
		if t.Endpoint == nil {
			t.Endpoint = &typesv1.Endpoint{}
		}
		t.Endpoint.Ports = append(t.Endpoint.Ports, &typesv1.PortConfig{
			Protocol: proto, TargetPort: port, PublishedPort: port, PublishMode: mode,
		})
	}
}

func hostPort(port uint32) taskOpt {
	return publish(typesv1.PortConfig_PROTOCOL_TCP, port, typesv1.PortConfig_PUBLISH_MODE_HOST)
}

// on makes the task one that runs on node id.
func on(id string) taskOpt {
	return func(t *typesv1.Task) {
		t.NodeId = id
		t.Status.State = typesv1.TaskState_TASK_STATE_RUNNING
	}
}

func state(s typesv1.TaskState) taskOpt {
	return func(t *typesv1.Task) { t.Status.State = s }
}

func desired(s typesv1.TaskState) taskOpt {
	return func(t *typesv1.Task) { t.DesiredState = s }
}

// infos builds NodeInfos for nodes with the placed tasks on them.
func infos(nodes []*typesv1.Node, placed ...*typesv1.Task) []*NodeInfo {
	out := make([]*NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		var mine []*typesv1.Task
		for _, t := range placed {
			if t.NodeId == n.Id {
				mine = append(mine, t)
			}
		}
		out = append(out, NewNodeInfo(n, mine))
	}
	return out
}

// replicas returns n pending tasks of svc in slots 1..n, ids svc.1 …
func replicas(svc string, n int, opts ...taskOpt) []*typesv1.Task {
	out := make([]*typesv1.Task, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, task(svc+"."+strconv.Itoa(i), svc, uint64(i), opts...))
	}
	return out
}

// perNode counts placed decisions per node id.
func perNode(ds []Decision) map[string]int {
	m := map[string]int{}
	for _, d := range ds {
		if d.NodeID != "" {
			m[d.NodeID]++
		}
	}
	return m
}
