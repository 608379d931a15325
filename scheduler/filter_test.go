package scheduler

import (
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestFilters(t *testing.T) {
	tcp := typesv1.PortConfig_PROTOCOL_TCP
	udp := typesv1.PortConfig_PROTOCOL_UDP
	hostMode := typesv1.PortConfig_PUBLISH_MODE_HOST
	ingress := typesv1.PortConfig_PUBLISH_MODE_INGRESS

	for _, tc := range []struct {
		name   string
		filter Filter
		task   *typesv1.Task
		node   *typesv1.Node
		placed []*typesv1.Task // on node "n"

		wantApply bool
		wantPass  bool
		// Explain(1) and Explain(3), checked only when the filter fails.
		explain1, explain3 string
	}{
		{
			name: "ready: ready node", filter: &ReadyFilter{},
			task: task("t", "s", 1), node: node("n"),
			wantApply: true, wantPass: true,
		},
		{
			name: "ready: down node", filter: &ReadyFilter{},
			task: task("t", "s", 1), node: node("n", withState(typesv1.NodeState_NODE_STATE_DOWN)),
			wantApply: true, explain1: "1 node not ready", explain3: "3 nodes not ready",
		},
		{
			name: "ready: unknown node", filter: &ReadyFilter{},
			task: task("t", "s", 1), node: node("n", withState(typesv1.NodeState_NODE_STATE_UNKNOWN)),
			wantApply: true, explain1: "1 node not ready", explain3: "3 nodes not ready",
		},
		{
			name: "ready: disconnected node", filter: &ReadyFilter{},
			task: task("t", "s", 1), node: node("n", withState(typesv1.NodeState_NODE_STATE_DISCONNECTED)),
			wantApply: true, explain1: "1 node not ready", explain3: "3 nodes not ready",
		},
		{
			name: "availability: active", filter: &AvailabilityFilter{},
			task: task("t", "s", 1), node: node("n"),
			wantApply: true, wantPass: true,
		},
		{
			name: "availability: pause", filter: &AvailabilityFilter{},
			task: task("t", "s", 1), node: node("n", withAvailability(typesv1.NodeAvailability_NODE_AVAILABILITY_PAUSE)),
			wantApply: true,
			explain1:  "1 node not available for new tasks", explain3: "3 nodes not available for new tasks",
		},
		{
			name: "availability: drain", filter: &AvailabilityFilter{},
			task: task("t", "s", 1), node: node("n", withAvailability(typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN)),
			wantApply: true,
			explain1:  "1 node not available for new tasks", explain3: "3 nodes not available for new tasks",
		},
		{
			name: "resources: no reservation", filter: &ResourceFilter{},
			task: task("t", "s", 1), node: node("n", withResources(0, 0)),
		},
		{
			name: "resources: fits exactly", filter: &ResourceFilter{},
			task: task("t", "s", 1, reserve(cpu, gib)), node: node("n", withResources(2*cpu, 2*gib)),
			placed:    []*typesv1.Task{task("p", "other", 1, on("n"), reserve(cpu, gib))},
			wantApply: true, wantPass: true,
		},
		{
			name: "resources: memory short after placed tasks", filter: &ResourceFilter{},
			task: task("t", "s", 1, reserve(0, gib)), node: node("n", withResources(2*cpu, 2*gib)),
			placed:    []*typesv1.Task{task("p", "other", 1, on("n"), reserve(0, gib+1))},
			wantApply: true,
			explain1:  "insufficient memory on 1 node", explain3: "insufficient memory on 3 nodes",
		},
		{
			name: "resources: cpu short", filter: &ResourceFilter{},
			task: task("t", "s", 1, reserve(3*cpu, 0)), node: node("n", withResources(2*cpu, 2*gib)),
			wantApply: true,
			explain1:  "insufficient resources on 1 node", explain3: "insufficient resources on 3 nodes",
		},
		{
			name: "resources: node reports none", filter: &ResourceFilter{},
			task: task("t", "s", 1, reserve(0, mib)), node: node("n", func(n *typesv1.Node) { n.Description.Resources = nil }),
			wantApply: true,
			explain1:  "insufficient memory on 1 node", explain3: "insufficient memory on 3 nodes",
		},
		{
			name: "constraints: none", filter: &ConstraintFilter{},
			task: task("t", "s", 1), node: node("n"),
		},
		{
			name: "constraints: met", filter: &ConstraintFilter{},
			task: task("t", "s", 1, constraints("node.role==worker", "node.labels.zone==a")), node: node("n", withLabels("zone", "a")),
			wantApply: true, wantPass: true,
		},
		{
			name: "constraints: not met", filter: &ConstraintFilter{},
			task: task("t", "s", 1, constraints("node.role==manager")), node: node("n"),
			wantApply: true,
			explain1:  "scheduling constraints not satisfied on 1 node", explain3: "scheduling constraints not satisfied on 3 nodes",
		},
		{
			name: "constraints: invalid", filter: &ConstraintFilter{},
			task: task("t", "s", 1, constraints("node.role=manager")), node: node("n"),
			wantApply: true,
			explain1:  `invalid constraint "node.role=manager": expected == or !=`,
			explain3:  `invalid constraint "node.role=manager": expected == or !=`,
		},
		{
			name: "host port: no host ports", filter: &HostPortFilter{},
			task: task("t", "s", 1, publish(tcp, 80, ingress)), node: node("n"),
			placed: []*typesv1.Task{task("p", "other", 1, on("n"), publish(tcp, 80, ingress))},
		},
		{
			name: "host port: free", filter: &HostPortFilter{},
			task: task("t", "s", 1, hostPort(80)), node: node("n"),
			placed:    []*typesv1.Task{task("p", "other", 1, on("n"), hostPort(81), publish(udp, 80, hostMode))},
			wantApply: true, wantPass: true,
		},
		{
			name: "host port: taken", filter: &HostPortFilter{},
			task: task("t", "s", 1, hostPort(81), hostPort(80)), node: node("n"),
			placed:    []*typesv1.Task{task("p", "other", 1, on("n"), hostPort(80))},
			wantApply: true,
			explain1:  "host-mode port already in use on 1 node", explain3: "host-mode port already in use on 3 nodes",
		},
		{
			name: "host port: taken by a task being stopped", filter: &HostPortFilter{},
			task: task("t", "s", 1, hostPort(80)), node: node("n"),
			placed: []*typesv1.Task{task("p", "s", 1, on("n"), hostPort(80),
				desired(typesv1.TaskState_TASK_STATE_SHUTDOWN))},
			wantApply: true,
			explain1:  "host-mode port already in use on 1 node", explain3: "host-mode port already in use on 3 nodes",
		},
		{
			name: "host port: freed by a task that ended", filter: &HostPortFilter{},
			task: task("t", "s", 1, hostPort(80)), node: node("n"),
			placed: []*typesv1.Task{task("p", "s", 1, on("n"), hostPort(80),
				state(typesv1.TaskState_TASK_STATE_SHUTDOWN))},
			wantApply: true, wantPass: true,
		},
		{
			name: "max replicas: unset", filter: &MaxReplicasFilter{},
			task: task("t", "s", 1), node: node("n"),
		},
		{
			name: "max replicas: below", filter: &MaxReplicasFilter{},
			task: task("t", "s", 3, maxReplicas(2)), node: node("n"),
			placed:    []*typesv1.Task{task("p", "s", 1, on("n")), task("q", "other", 1, on("n"))},
			wantApply: true, wantPass: true,
		},
		{
			name: "max replicas: reached", filter: &MaxReplicasFilter{},
			task: task("t", "s", 3, maxReplicas(2)), node: node("n"),
			placed:    []*typesv1.Task{task("p", "s", 1, on("n")), task("q", "s", 2, on("n"))},
			wantApply: true,
			explain1:  "max replicas per node limit exceed", explain3: "max replicas per node limit exceed",
		},
		{
			name: "max replicas: a task being stopped does not count", filter: &MaxReplicasFilter{},
			task: task("t", "s", 3, maxReplicas(1)), node: node("n"),
			placed:    []*typesv1.Task{task("p", "s", 1, on("n"), desired(typesv1.TaskState_TASK_STATE_SHUTDOWN))},
			wantApply: true, wantPass: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ni := NewNodeInfo(tc.node, tc.placed)
			if got := tc.filter.SetTask(tc.task); got != tc.wantApply {
				t.Fatalf("SetTask = %v, want %v", got, tc.wantApply)
			}
			if !tc.wantApply {
				return
			}
			if got := tc.filter.Check(ni); got != tc.wantPass {
				t.Fatalf("Check = %v, want %v", got, tc.wantPass)
			}
			if tc.wantPass {
				return
			}
			if got := tc.filter.Explain(1); got != tc.explain1 {
				t.Errorf("Explain(1) = %q, want %q", got, tc.explain1)
			}
			if got := tc.filter.Explain(3); got != tc.explain3 {
				t.Errorf("Explain(3) = %q, want %q", got, tc.explain3)
			}
		})
	}
}

// A filter is reused for task after task; what it learned about one task
// must not leak into the next.
func TestFilterStateResetBySetTask(t *testing.T) {
	n := NewNodeInfo(node("n", withResources(cpu, gib)), nil)

	rf := &ResourceFilter{}
	rf.SetTask(task("a", "s", 1, reserve(2*cpu, 0)))
	if rf.Check(n) {
		t.Fatal("2 CPUs fit on a 1-CPU node")
	}
	rf.SetTask(task("b", "s", 2, reserve(0, 2*gib)))
	if rf.Check(n) {
		t.Fatal("2 GiB fit on a 1-GiB node")
	}
	if got, want := rf.Explain(1), "insufficient memory on 1 node"; got != want {
		t.Errorf("Explain after a memory-only failure = %q, want %q", got, want)
	}

	cf := &ConstraintFilter{}
	cf.SetTask(task("a", "s", 1, constraints("node.role=manager")))
	cf.SetTask(task("b", "s", 2, constraints("node.role==worker")))
	if !cf.Check(n) {
		t.Error("the previous task's parse error leaked into the next task")
	}
}

func TestNodeInfoAccounting(t *testing.T) {
	n := node("n", withResources(4*cpu, 4*gib))
	running := task("run", "a", 1, on("n"), reserve(cpu, gib), hostPort(80))
	stopping := task("stop", "a", 2, on("n"), reserve(cpu, gib), hostPort(81),
		desired(typesv1.TaskState_TASK_STATE_SHUTDOWN))
	ended := task("ended", "a", 3, on("n"), reserve(cpu, gib), hostPort(82),
		state(typesv1.TaskState_TASK_STATE_FAILED))
	pending := task("pending", "g", 0, reserve(cpu, gib), func(t *typesv1.Task) { t.NodeId = "n" })
	elsewhere := task("elsewhere", "a", 4, on("other"), reserve(cpu, gib))

	ni := NewNodeInfo(n, []*typesv1.Task{running, stopping, ended, pending, elsewhere})

	if len(ni.Tasks) != 2 || ni.Tasks["run"] == nil || ni.Tasks["stop"] == nil {
		t.Fatalf("Tasks = %v, want run and stop", keys(ni.Tasks))
	}
	if ni.Available.NanoCpus != 2*cpu || ni.Available.MemoryBytes != 2*gib {
		t.Errorf("Available = %d nano CPUs, %d bytes; want 2 CPUs, 2 GiB", ni.Available.NanoCpus, ni.Available.MemoryBytes)
	}
	if ni.ActiveTasks != 1 || ni.ServiceTasks["a"] != 1 {
		t.Errorf("ActiveTasks = %d, ServiceTasks[a] = %d; want 1, 1", ni.ActiveTasks, ni.ServiceTasks["a"])
	}
	if !ni.HostPorts["tcp/80"] || !ni.HostPorts["tcp/81"] || ni.HostPorts["tcp/82"] {
		t.Errorf("HostPorts = %v, want tcp/80 and tcp/81", ni.HostPorts)
	}

	// The stopping task finishes: everything it held comes back.
	done := task("stop", "a", 2, on("n"), reserve(cpu, gib), hostPort(81),
		desired(typesv1.TaskState_TASK_STATE_SHUTDOWN), state(typesv1.TaskState_TASK_STATE_SHUTDOWN))
	if ni.AddTask(done) {
		t.Error("AddTask recorded an ended task")
	}
	if ni.Available.MemoryBytes != 3*gib || ni.HostPorts["tcp/81"] || !ni.HostPorts["tcp/80"] {
		t.Errorf("after the task ended: memory %d, ports %v", ni.Available.MemoryBytes, ni.HostPorts)
	}

	if !ni.RemoveTask(running) || ni.RemoveTask(running) {
		t.Error("RemoveTask should succeed once")
	}
	if ni.Available.NanoCpus != 4*cpu || ni.Available.MemoryBytes != 4*gib ||
		ni.ActiveTasks != 0 || len(ni.ServiceTasks) != 0 || len(ni.HostPorts) != 0 {
		t.Errorf("empty node left with %+v", ni)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
