package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

var (
	down    = withState(typesv1.NodeState_NODE_STATE_DOWN)
	unknown = withState(typesv1.NodeState_NODE_STATE_UNKNOWN)
	drain   = withAvailability(typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN)
	pause   = withAvailability(typesv1.NodeAvailability_NODE_AVAILABILITY_PAUSE)
)

// TestScheduleOneTask covers where a single task goes, or why nowhere.
func TestScheduleOneTask(t *testing.T) {
	for _, tc := range []struct {
		name       string
		nodes      []*typesv1.Node
		placed     []*typesv1.Task
		task       *typesv1.Task
		wantNode   string
		wantReason string
	}{
		{
			name: "no nodes at all",
			task: task("t", "s", 1), wantReason: "no suitable node",
		},
		{
			name:  "only ready active node",
			nodes: []*typesv1.Node{node("a", down), node("b"), node("c", drain), node("d", pause)},
			task:  task("t", "s", 1), wantNode: "b",
		},
		{
			name:       "down and unknown nodes",
			nodes:      []*typesv1.Node{node("a", down), node("b", unknown)},
			task:       task("t", "s", 1),
			wantReason: "no suitable node (2 nodes not ready)",
		},
		{
			name:       "drained and paused nodes",
			nodes:      []*typesv1.Node{node("a", drain), node("b", pause)},
			task:       task("t", "s", 1),
			wantReason: "no suitable node (2 nodes not available for new tasks)",
		},
		{
			name:       "a down node is counted once, as not ready, even if drained",
			nodes:      []*typesv1.Node{node("a", down, drain), node("b", drain)},
			task:       task("t", "s", 1),
			wantReason: "no suitable node (1 node not ready; 1 node not available for new tasks)",
		},
		{
			name:       "insufficient memory",
			nodes:      []*typesv1.Node{node("a", withResources(4*cpu, gib))},
			task:       task("t", "s", 1, reserve(0, 2*gib)),
			wantReason: "no suitable node (insufficient memory on 1 node)",
		},
		{
			name:       "insufficient cpu reads as Docker's resources",
			nodes:      []*typesv1.Node{node("a", withResources(cpu, 8*gib)), node("b", withResources(cpu/2, 8*gib))},
			task:       task("t", "s", 1, reserve(2*cpu, gib)),
			wantReason: "no suitable node (insufficient resources on 2 nodes)",
		},
		{
			name: "memory on one node, constraints on two",
			nodes: []*typesv1.Node{
				node("a", withLabels("zone", "x"), withResources(4*cpu, gib)),
				node("b", withLabels("zone", "y")),
				node("c"),
			},
			task:       task("t", "s", 1, reserve(0, 2*gib), constraints("node.labels.zone==x")),
			wantReason: "no suitable node (insufficient memory on 1 node; scheduling constraints not satisfied on 2 nodes)",
		},
		{
			name: "every filter fails some node, listed in pipeline order",
			nodes: []*typesv1.Node{
				node("max", withLabels("ok", "1")),
				node("port", withLabels("ok", "1")),
				node("constraint"),
				node("constraint2"),
				node("memory", withLabels("ok", "1"), withResources(4*cpu, mib)),
				node("drained", withLabels("ok", "1"), drain),
				node("down", withLabels("ok", "1"), down),
			},
			placed: []*typesv1.Task{
				task("p1", "s", 1, on("max")),
				task("p2", "other", 1, on("port"), hostPort(8080)),
			},
			task: task("t", "s", 2, reserve(0, gib), constraints("node.labels.ok==1"), hostPort(8080), maxReplicas(1)),
			wantReason: "no suitable node (1 node not ready; 1 node not available for new tasks; " +
				"insufficient memory on 1 node; scheduling constraints not satisfied on 2 nodes; " +
				"host-mode port already in use on 1 node; max replicas per node limit exceed)",
		},
		{
			name:       "invalid constraint places the task nowhere",
			nodes:      []*typesv1.Node{node("a"), node("b")},
			task:       task("t", "s", 1, constraints("node.role=manager")),
			wantReason: `no suitable node (invalid constraint "node.role=manager": expected == or !=)`,
		},
		{
			name:     "constraint on role",
			nodes:    []*typesv1.Node{node("a"), node("b", asManager()), node("c")},
			task:     task("t", "s", 1, constraints("node.role==manager")),
			wantNode: "b",
		},
		{
			name:     "constraint on hostname, other case",
			nodes:    []*typesv1.Node{node("a", withHostname("alpha")), node("b", withHostname("Bravo"))},
			task:     task("t", "s", 1, constraints("node.hostname==BRAVO")),
			wantNode: "b",
		},
		{
			name:     "label != picks a node without the label",
			nodes:    []*typesv1.Node{node("a", withLabels("gpu", "yes")), node("b")},
			task:     task("t", "s", 1, constraints("node.labels.gpu!=yes")),
			wantNode: "b",
		},
		{
			name:       "label == skips nodes without the label",
			nodes:      []*typesv1.Node{node("a"), node("b", withLabels("gpu", "no"))},
			task:       task("t", "s", 1, constraints("node.labels.gpu==yes")),
			wantReason: "no suitable node (scheduling constraints not satisfied on 2 nodes)",
		},
		{
			name:     "host port taken elsewhere sends the task here",
			nodes:    []*typesv1.Node{node("a"), node("b")},
			placed:   []*typesv1.Task{task("p", "other", 1, on("a"), hostPort(80))},
			task:     task("t", "s", 1, hostPort(80)),
			wantNode: "b",
		},
		{
			name:     "ingress ports never conflict",
			nodes:    []*typesv1.Node{node("a")},
			placed:   []*typesv1.Task{task("p", "other", 1, on("a"), publish(typesv1.PortConfig_PROTOCOL_TCP, 80, typesv1.PortConfig_PUBLISH_MODE_INGRESS))},
			task:     task("t", "s", 1, publish(typesv1.PortConfig_PROTOCOL_TCP, 80, typesv1.PortConfig_PUBLISH_MODE_INGRESS)),
			wantNode: "a",
		},
		{
			name:     "fewest tasks of the service beats fewest tasks",
			nodes:    []*typesv1.Node{node("a"), node("b")},
			placed:   []*typesv1.Task{task("p1", "s", 1, on("a")), task("p2", "x", 1, on("b")), task("p3", "y", 1, on("b"))},
			task:     task("t", "s", 2),
			wantNode: "b",
		},
		{
			name:     "tasks being stopped do not count for spread",
			nodes:    []*typesv1.Node{node("a"), node("b")},
			placed:   []*typesv1.Task{task("p1", "s", 1, on("a"), desired(typesv1.TaskState_TASK_STATE_SHUTDOWN)), task("p2", "x", 1, on("b"))},
			task:     task("t", "s", 1),
			wantNode: "a",
		},
		{
			name:     "ties go to the lowest node id",
			nodes:    []*typesv1.Node{node("c"), node("a"), node("b")},
			task:     task("t", "s", 1),
			wantNode: "a",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Schedule(infos(tc.nodes, tc.placed...), []*typesv1.Task{tc.task})
			want := []Decision{{TaskID: tc.task.Id, NodeID: tc.wantNode, Reason: tc.wantReason}}
			if !slices.Equal(got, want) {
				t.Errorf("Schedule:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestSpreadReplicasOverEqualNodes(t *testing.T) {
	nodes := infos([]*typesv1.Node{node("n1"), node("n2"), node("n3")})
	ds := Schedule(nodes, replicas("web", 5))
	want := map[string]int{"n1": 2, "n2": 2, "n3": 1}
	if got := perNode(ds); !mapsEqual(got, want) {
		t.Errorf("placement %v, want %v", got, want)
	}
	// The NodeInfos now carry the placed tasks.
	for _, n := range nodes {
		if n.ServiceTasks["web"] != want[n.ID()] || n.ActiveTasks != want[n.ID()] {
			t.Errorf("node %s records %d web tasks, %d in all; want %d", n.ID(), n.ServiceTasks["web"], n.ActiveTasks, want[n.ID()])
		}
	}
}

func TestSecondServiceAvoidsBusierNode(t *testing.T) {
	nodes := infos([]*typesv1.Node{node("n1"), node("n2"), node("n3")},
		task("db.1", "db", 1, on("n1")))
	ds := Schedule(nodes, replicas("web", 2))
	want := []Decision{{TaskID: "web.1", NodeID: "n2"}, {TaskID: "web.2", NodeID: "n3"}}
	if !slices.Equal(ds, want) {
		t.Errorf("got %+v, want %+v", ds, want)
	}

	// Within one call too: the first service fills n1 and n2 first, so the
	// second service starts on n3.
	nodes = infos([]*typesv1.Node{node("n1"), node("n2"), node("n3")})
	ds = Schedule(nodes, append(replicas("a", 2), replicas("b", 1)...))
	if got := ds[2]; got.TaskID != "b.1" || got.NodeID != "n3" {
		t.Errorf("b.1 went to %+v, want n3", got)
	}
}

func TestReservationsAccumulateWithinOneCall(t *testing.T) {
	nodes := infos([]*typesv1.Node{node("small", withResources(cpu, 1000*1000*1000))})
	ds := Schedule(nodes, replicas("web", 3, reserve(0, 400*1000*1000)))
	want := []Decision{
		{TaskID: "web.1", NodeID: "small"},
		{TaskID: "web.2", NodeID: "small"},
		{TaskID: "web.3", Reason: "no suitable node (insufficient memory on 1 node)"},
	}
	if !slices.Equal(ds, want) {
		t.Errorf("got %+v\nwant %+v", ds, want)
	}
	if got := nodes[0].Available.MemoryBytes; got != 200*1000*1000 {
		t.Errorf("available memory %d, want 200M", got)
	}
}

func TestHostPortConflictsWithinOneCall(t *testing.T) {
	nodes := infos([]*typesv1.Node{node("a"), node("b")})
	tasks := replicas("web", 3, hostPort(80))
	// Another service on udp/80 and on tcp/443 is no conflict.
	tasks = append(tasks,
		task("dns.1", "dns", 1, publish(typesv1.PortConfig_PROTOCOL_UDP, 80, typesv1.PortConfig_PUBLISH_MODE_HOST)),
		task("tls.1", "tls", 1, hostPort(443)),
	)
	ds := Schedule(nodes, tasks)
	want := []Decision{
		{TaskID: "dns.1", NodeID: "a"},
		{TaskID: "tls.1", NodeID: "b"},
		{TaskID: "web.1", NodeID: "a"},
		{TaskID: "web.2", NodeID: "b"},
		{TaskID: "web.3", Reason: "no suitable node (host-mode port already in use on 2 nodes)"},
	}
	if !slices.Equal(ds, want) {
		t.Errorf("got %+v\nwant %+v", ds, want)
	}
}

func TestMaxReplicasPerNode(t *testing.T) {
	nodes := infos([]*typesv1.Node{node("a"), node("b")}, task("web.1", "web", 1, on("a")))
	ds := Schedule(nodes, replicas("web", 4, maxReplicas(2))[1:])
	want := []Decision{
		{TaskID: "web.2", NodeID: "b"},
		{TaskID: "web.3", NodeID: "a"},
		{TaskID: "web.4", NodeID: "b"},
	}
	if !slices.Equal(ds, want) {
		t.Errorf("got %+v\nwant %+v", ds, want)
	}
	ds = Schedule(nodes, []*typesv1.Task{task("web.5", "web", 5, maxReplicas(2))})
	if got := ds[0].Reason; got != "no suitable node (max replicas per node limit exceed)" {
		t.Errorf("reason %q", got)
	}
}

func TestExcludedNodesNeverGetTasks(t *testing.T) {
	nodes := infos([]*typesv1.Node{
		node("a", down), node("b", drain), node("c", pause), node("d"),
		node("e", unknown), node("f", withState(typesv1.NodeState_NODE_STATE_DISCONNECTED)),
	})
	ds := Schedule(nodes, replicas("web", 10))
	if got := perNode(ds); !mapsEqual(got, map[string]int{"d": 10}) {
		t.Errorf("placement %v, want all on d", got)
	}
}

func TestSpreadPreference(t *testing.T) {
	t.Run("groups even out, not nodes", func(t *testing.T) {
		// Zone a has three nodes, zone b one: half the tasks go to b1.
		nodes := infos([]*typesv1.Node{
			node("a1", withLabels("zone", "a")), node("a2", withLabels("zone", "a")),
			node("a3", withLabels("zone", "a")), node("b1", withLabels("zone", "b")),
		})
		ds := Schedule(nodes, replicas("web", 6, prefs("spread=node.labels.zone")))
		want := map[string]int{"a1": 1, "a2": 1, "a3": 1, "b1": 3}
		if got := perNode(ds); !mapsEqual(got, want) {
			t.Errorf("placement %v, want %v", got, want)
		}
	})
	t.Run("nodes without the label form a group", func(t *testing.T) {
		nodes := infos([]*typesv1.Node{
			node("a1", withLabels("zone", "a")), node("a2", withLabels("zone", "a")),
			node("x1"), node("x2"),
		})
		ds := Schedule(nodes, replicas("web", 4, prefs("spread=node.labels.zone")))
		want := map[string]int{"a1": 1, "a2": 1, "x1": 1, "x2": 1}
		if got := perNode(ds); !mapsEqual(got, want) {
			t.Errorf("placement %v, want %v", got, want)
		}
	})
	t.Run("existing tasks count, a full node still weighs on its group", func(t *testing.T) {
		// a1 is full but its two tasks keep zone a at 2: the next two
		// tasks go to zone b rather than to a2.
		nodes := infos([]*typesv1.Node{
			node("a1", withLabels("zone", "a"), withResources(cpu, 2*gib)),
			node("a2", withLabels("zone", "a")),
			node("b1", withLabels("zone", "b")),
		}, task("web.1", "web", 1, on("a1"), reserve(0, gib)), task("web.2", "web", 2, on("a1"), reserve(0, gib)))
		ds := Schedule(nodes, replicas("web", 5, prefs("spread=node.labels.zone"), reserve(0, gib))[2:])
		want := []Decision{
			{TaskID: "web.3", NodeID: "b1"},
			{TaskID: "web.4", NodeID: "b1"},
			{TaskID: "web.5", NodeID: "a2"},
		}
		if !slices.Equal(ds, want) {
			t.Errorf("got %+v\nwant %+v", ds, want)
		}
	})
	t.Run("nested preferences", func(t *testing.T) {
		// Two zones, each with two racks; eight tasks: two per rack.
		var ns []*typesv1.Node
		for _, z := range []string{"a", "b"} {
			for _, r := range []string{"1", "2"} {
				ns = append(ns, node(z+r+"x", withLabels("zone", z, "rack", r)))
			}
		}
		ns = append(ns, node("a1y", withLabels("zone", "a", "rack", "1")))
		ds := Schedule(infos(ns), replicas("web", 8, prefs("spread=node.labels.zone", "spread=node.labels.rack")))
		want := map[string]int{"a1x": 1, "a1y": 1, "a2x": 2, "b1x": 2, "b2x": 2}
		if got := perNode(ds); !mapsEqual(got, want) {
			t.Errorf("placement %v, want %v", got, want)
		}
	})
	t.Run("invalid preference is ignored", func(t *testing.T) {
		ds := Schedule(infos([]*typesv1.Node{node("a"), node("b")}), replicas("web", 2, prefs("binpack")))
		if got := perNode(ds); !mapsEqual(got, map[string]int{"a": 1, "b": 1}) {
			t.Errorf("placement %v", got)
		}
	})
}

// TestDeterministic: the same cluster and tasks, given in any order, give
// the same decisions.
func TestDeterministic(t *testing.T) {
	build := func() ([]*NodeInfo, []*typesv1.Task) {
		var ns []*typesv1.Node
		for i := range 7 {
			ns = append(ns, node(fmt.Sprintf("n%d", i), withLabels("zone", fmt.Sprint(i%3)),
				withResources(4*cpu, 4*gib)))
		}
		placed := []*typesv1.Task{
			task("old1", "db", 1, on("n3"), reserve(cpu, gib)),
			task("old2", "cache", 1, on("n5"), hostPort(6379)),
		}
		var ts []*typesv1.Task
		ts = append(ts, replicas("web", 12, reserve(cpu/2, 512*mib), prefs("spread=node.labels.zone"))...)
		ts = append(ts, replicas("cache", 8, hostPort(6379))...)
		ts = append(ts, replicas("api", 9, reserve(0, gib), maxReplicas(2))...)
		ts = append(ts, replicas("edge", 3, constraints("node.labels.zone!=1"))...)
		return infos(ns, placed...), ts
	}

	nodes, tasks := build()
	want := Schedule(nodes, tasks)
	if got := len(perNode(want)); got < 5 {
		t.Fatalf("only %d nodes used; the test should exercise more", got)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		nodes, tasks := build()
		rng.Shuffle(len(nodes), func(a, b int) { nodes[a], nodes[b] = nodes[b], nodes[a] })
		rng.Shuffle(len(tasks), func(a, b int) { tasks[a], tasks[b] = tasks[b], tasks[a] })
		if got := Schedule(nodes, tasks); !slices.Equal(got, want) {
			t.Fatalf("shuffle %d gave different decisions:\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func TestScheduleDoesNotModifyInput(t *testing.T) {
	tasks := replicas("web", 3)
	slices.Reverse(tasks)
	before := []string{tasks[0].Id, tasks[1].Id, tasks[2].Id}
	Schedule(infos([]*typesv1.Node{node("a")}), tasks)
	for i, tk := range tasks {
		if tk.Id != before[i] || tk.NodeId != "" || tk.Status.State != typesv1.TaskState_TASK_STATE_PENDING {
			t.Errorf("task %d changed: %v", i, tk)
		}
	}
}

func TestCheckNode(t *testing.T) {
	n := node("n", withResources(2*cpu, 2*gib))
	global := func(id string, opts ...taskOpt) *typesv1.Task {
		return task(id, "mon", 0, append([]taskOpt{func(t *typesv1.Task) { t.NodeId = "n" }}, opts...)...)
	}

	t.Run("fits", func(t *testing.T) {
		ni := NewNodeInfo(n, nil)
		if ok, reason := CheckNode(ni, global("g", reserve(cpu, gib))); !ok || reason != "" {
			t.Errorf("CheckNode = %v, %q", ok, reason)
		}
		if len(ni.Tasks) != 0 {
			t.Error("CheckNode recorded the task")
		}
	})
	t.Run("does not fit", func(t *testing.T) {
		ni := NewNodeInfo(n, []*typesv1.Task{task("big", "db", 1, on("n"), reserve(0, 2*gib))})
		ok, reason := CheckNode(ni, global("g", reserve(0, gib)))
		if ok || reason != "no suitable node (insufficient memory on 1 node)" {
			t.Errorf("CheckNode = %v, %q", ok, reason)
		}
	})
	t.Run("drained", func(t *testing.T) {
		ni := NewNodeInfo(node("n", drain), nil)
		ok, reason := CheckNode(ni, global("g"))
		if ok || reason != "no suitable node (1 node not available for new tasks)" {
			t.Errorf("CheckNode = %v, %q", ok, reason)
		}
	})
	t.Run("pending global tasks do not block each other", func(t *testing.T) {
		// Two pending global tasks each need the whole node's memory.
		// NewNodeInfo leaves them out, so the first fits; once recorded,
		// the second does not.
		g1 := global("g1", reserve(0, 2*gib))
		g2 := task("g2", "other", 0, func(t *typesv1.Task) { t.NodeId = "n" }, reserve(0, 2*gib))
		ni := NewNodeInfo(n, []*typesv1.Task{g1, g2})
		if ok, reason := CheckNode(ni, g1); !ok {
			t.Fatalf("g1: %s", reason)
		}
		ni.AddTask(g1)
		if ok, _ := CheckNode(ni, g2); ok {
			t.Error("g2 fits beside g1")
		}
	})
	t.Run("a recorded task does not compete with itself", func(t *testing.T) {
		g := global("g", reserve(0, 2*gib), hostPort(9100), state(typesv1.TaskState_TASK_STATE_ASSIGNED))
		ni := NewNodeInfo(n, []*typesv1.Task{g})
		if ok, reason := CheckNode(ni, g); !ok {
			t.Errorf("CheckNode = %v, %q", ok, reason)
		}
		if ni.Available.MemoryBytes != 0 || !ni.HostPorts["tcp/9100"] {
			t.Error("CheckNode changed the NodeInfo")
		}
	})
}

func TestSchedulePreassignedTasks(t *testing.T) {
	nodes := infos([]*typesv1.Node{node("a", withResources(cpu, gib)), node("b"), node("c", drain)})
	pinned := func(id, nodeID string, opts ...taskOpt) *typesv1.Task {
		return task(id, "mon", 0, append(opts, func(t *typesv1.Task) { t.NodeId = nodeID })...)
	}
	ds := Schedule(nodes, []*typesv1.Task{
		pinned("g-a", "a", reserve(0, 2*gib)), // too big for a; must not move to b
		pinned("g-b", "b"),
		pinned("g-c", "c"),
		pinned("g-x", "gone"),
		task("web.1", "web", 1),
	})
	want := []Decision{
		{TaskID: "g-a", Reason: "no suitable node (insufficient memory on 1 node)"},
		{TaskID: "g-b", NodeID: "b"},
		{TaskID: "g-c", Reason: "no suitable node (1 node not available for new tasks)"},
		{TaskID: "g-x", Reason: "no suitable node (node gone not found)"},
		{TaskID: "web.1", NodeID: "a"}, // b has g-b now
	}
	if !slices.Equal(ds, want) {
		t.Errorf("got %+v\nwant %+v", ds, want)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// BenchmarkSchedule150On5 places 150 tasks of 5 services (reservations,
// a constraint, host ports, spread) on 5 nodes. The NodeInfos are rebuilt
// each round because Schedule fills them; that is part of the figure, as it
// is of the manager's loop.
func BenchmarkSchedule150On5(b *testing.B) {
	var ns []*typesv1.Node
	for i := range 5 {
		ns = append(ns, node(fmt.Sprintf("node%d", i), withLabels("zone", fmt.Sprint(i%2)),
			withResources(32*cpu, 64*gib)))
	}
	var ts []*typesv1.Task
	ts = append(ts, replicas("web", 60, reserve(cpu/10, 128*mib))...)
	ts = append(ts, replicas("api", 40, reserve(cpu/4, 256*mib), prefs("spread=node.labels.zone"))...)
	ts = append(ts, replicas("worker", 40, constraints("node.role==worker", "node.labels.zone!=9"))...)
	ts = append(ts, replicas("edge", 5, hostPort(443))...)
	ts = append(ts, replicas("cache", 5, maxReplicas(1))...)

	placed := 0
	b.ReportAllocs()
	for b.Loop() {
		nodes := make([]*NodeInfo, len(ns))
		for i, n := range ns {
			nodes[i] = NewNodeInfo(n, nil)
		}
		placed = len(perNode(Schedule(nodes, ts)))
	}
	if placed != 5 {
		b.Fatalf("used %d nodes", placed)
	}
}
