package deploy

import (
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestGlobal(t *testing.T) {
	const (
		pause = typesv1.NodeAvailability_NODE_AVAILABILITY_PAUSE
		drain = typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN
	)
	mixed := []*typesv1.Node{
		ready("n1"),
		availability("n2", pause),
		availability("n3", drain),
		down("n4"),
		node("n5", typesv1.NodeState_NODE_STATE_DISCONNECTED, 0),
	}
	zoned := func(id, zone string) *typesv1.Node {
		n := ready(id)
		n.Spec.Annotations = &typesv1.Annotations{Labels: map[string]string{"zone": zone}}
		return n
	}
	// A placement constraint "node.labels.zone == a", as the scheduler's
	// filters would check it.
	zoneA := func(n *typesv1.Node, t *typesv1.Task) bool {
		return defaultEligible(n, t) && n.GetSpec().GetAnnotations().GetLabels()["zone"] == "a"
	}
	run(t, []tc{{
		name:  "one task per ready, active node",
		svc:   svc(0, global()),
		nodes: mixed,
		want:  summary{create: []string{"web.n1"}},
	}, {
		name: "pause and disconnected keep their task, drain and down shut it",
		svc:  svc(0, global()),
		tasks: []*typesv1.Task{
			gtask("n1", RUNNING, RUNNING), gtask("n2", RUNNING, RUNNING), gtask("n3", RUNNING, RUNNING),
			gtask("n4", RUNNING, RUNNING), gtask("n5", RUNNING, RUNNING),
		},
		nodes: mixed,
		want:  summary{update: []string{"g-n3", "g-n4"}},
	}, {
		name:  "a new node gets a task",
		svc:   svc(0, global()),
		tasks: []*typesv1.Task{gtask("n1", RUNNING, RUNNING)},
		nodes: []*typesv1.Node{ready("n1"), ready("n6")},
		want:  summary{create: []string{"web.n6"}},
	}, {
		name:  "a removed node's task is shut down",
		svc:   svc(0, global()),
		tasks: []*typesv1.Task{gtask("n1", RUNNING, RUNNING), gtask("n9", RUNNING, RUNNING)},
		nodes: []*typesv1.Node{ready("n1")},
		want:  summary{update: []string{"g-n9"}},
	}, {
		name:     "placement constraints: matching nodes only",
		svc:      svc(0, global()),
		tasks:    []*typesv1.Task{gtask("nb", RUNNING, RUNNING)},
		nodes:    []*typesv1.Node{zoned("na", "a"), zoned("nb", "b")},
		eligible: zoneA,
		want:     summary{update: []string{"g-nb"}, create: []string{"web.na"}},
	}, {
		name:     "placement constraints: a paused node that matches keeps its task",
		svc:      svc(0, global()),
		tasks:    []*typesv1.Task{gtask("na", RUNNING, RUNNING)},
		nodes:    []*typesv1.Node{func() *typesv1.Node { n := zoned("na", "a"); n.Spec.Availability = pause; return n }()},
		eligible: zoneA,
	}, {
		name:  "a failed task is replaced on its node",
		svc:   svc(0, global(), noDelay()),
		tasks: []*typesv1.Task{gtask("n1", FAILED, RUNNING)},
		nodes: []*typesv1.Node{ready("n1")},
		want:  summary{update: []string{"g-n1"}, create: []string{"web.n1"}},
	}, {
		name:  "restart policy none: the node stays without a task",
		svc:   svc(0, global(), restart(typesv1.RestartPolicy_CONDITION_NONE, 0, 0, 0)),
		tasks: []*typesv1.Task{gtask("n1", COMPLETE, RUNNING)},
		nodes: []*typesv1.Node{ready("n1")},
		want:  summary{update: []string{"g-n1"}},
	}, {
		name:  "a paused node gets no replacement",
		svc:   svc(0, global(), noDelay()),
		tasks: []*typesv1.Task{gtask("n2", FAILED, RUNNING)},
		nodes: []*typesv1.Node{availability("n2", pause)},
		want:  summary{update: []string{"g-n2"}},
	}, {
		name:  "no node listed: nothing is created or judged",
		svc:   svc(0, global()),
		tasks: []*typesv1.Task{gtask("n1", RUNNING, RUNNING)},
	}, {
		name:  "history is kept per node",
		svc:   svc(0, global()),
		tasks: with([]*typesv1.Task{gtask("n1", RUNNING, RUNNING)}, globalHistory("n1", 6)...),
		nodes: []*typesv1.Node{ready("n1")},
		want:  summary{delete: []string{"h1-1"}},
	}, {
		name:  "rolling update, node by node",
		svc:   svc(0, global()),
		tasks: []*typesv1.Task{gtask("n1", RUNNING, RUNNING, old()), gtask("n2", RUNNING, RUNNING, old())},
		nodes: []*typesv1.Node{ready("n1"), ready("n2")},
		want:  summary{update: []string{"g-n1"}, create: []string{"web.n1"}, status: typesv1.UpdateStatus_STATE_UPDATING},
	}, {
		name: "rolling update leaves a paused node's task alone and still completes",
		svc:  svc(0, global(), status(typesv1.UpdateStatus_STATE_UPDATING, t0.Add(-minute))),
		tasks: []*typesv1.Task{
			gtask("n1", RUNNING, RUNNING, since(-minute/2)),
			gtask("n2", RUNNING, RUNNING, old()),
		},
		nodes: []*typesv1.Node{ready("n1"), availability("n2", pause)},
		want:  summary{status: typesv1.UpdateStatus_STATE_COMPLETED},
	}})
}

func globalHistory(node string, n int) []*typesv1.Task {
	ts := history(1, n)
	for _, t := range ts {
		t.Slot = 0
		t.NodeId = node
	}
	return ts
}

func TestGlobalTaskWithoutNode(t *testing.T) {
	run(t, []tc{{
		name:  "a global task with no node is shut down",
		svc:   svc(0, global()),
		tasks: []*typesv1.Task{gtask("n1", RUNNING, RUNNING), gtask("", NEW, RUNNING)},
		nodes: []*typesv1.Node{ready("n1")},
		want:  summary{update: []string{"g-"}},
	}})
}
