package deploy

import (
	"fmt"
	"testing"
	"time"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func running(slots ...uint64) []*typesv1.Task {
	var ts []*typesv1.Task
	for _, s := range slots {
		ts = append(ts, task(s, RUNNING, RUNNING))
	}
	return ts
}

func with(ts []*typesv1.Task, more ...*typesv1.Task) []*typesv1.Task {
	return append(ts, more...)
}

func TestReplicatedScale(t *testing.T) {
	run(t, []tc{{
		name: "fill slots 1..N",
		svc:  svc(3),
		want: summary{create: []string{"web.1", "web.2", "web.3"}},
	}, {
		name:  "steady state writes nothing",
		svc:   svc(3),
		tasks: running(1, 2, 3),
	}, {
		name:  "scale up fills the lowest free slots first",
		svc:   svc(4),
		tasks: running(1, 3),
		want:  summary{create: []string{"web.2", "web.4"}},
	}, {
		name:  "scale down shuts the highest slots",
		svc:   svc(2),
		tasks: running(1, 2, 3, 4),
		want:  summary{update: []string{"s3", "s4"}},
	}, {
		name:  "scale down prefers tasks not yet running",
		svc:   svc(3),
		tasks: with(running(1, 3, 4), task(2, STARTING, RUNNING)),
		want:  summary{update: []string{"s2"}},
	}, {
		name:  "scale down to zero",
		svc:   svc(0),
		tasks: running(1, 2),
		want:  summary{update: []string{"s1", "s2"}},
	}, {
		name:  "slots stopped by a scale down stay free",
		svc:   svc(2),
		tasks: with(running(1, 2), task(3, SHUTDOWN, SHUTDOWN), task(4, RUNNING, SHUTDOWN)),
	}, {
		name:  "holes left by a scale down stay",
		svc:   svc(2),
		tasks: with(running(1, 3), task(2, SHUTDOWN, SHUTDOWN)),
	}, {
		name:  "scale up reuses a stopped slot without delay",
		svc:   svc(3),
		tasks: with(running(1, 2), task(3, SHUTDOWN, SHUTDOWN, at(-time.Second))),
		want:  summary{create: []string{"web.3"}},
	}, {
		name: "duplicate tasks in a slot: the older is shut down",
		svc:  svc(1),
		tasks: []*typesv1.Task{
			task(1, RUNNING, RUNNING, id("a"), created(-2*time.Hour)),
			task(1, RUNNING, RUNNING, id("b")),
		},
		want: summary{update: []string{"a"}},
	}, {
		name: "duplicate tasks in a slot: the running one is kept",
		svc:  svc(1),
		tasks: []*typesv1.Task{
			task(1, RUNNING, RUNNING, id("a"), created(-2*time.Hour)),
			task(1, PENDING, RUNNING, id("b")),
		},
		want: summary{update: []string{"b"}},
	}})
}

func TestRestartPolicy(t *testing.T) {
	any0 := noDelay()
	onFailure := restart(typesv1.RestartPolicy_CONDITION_ON_FAILURE, 0, 0, 0)
	none := restart(typesv1.RestartPolicy_CONDITION_NONE, 0, 0, 0)
	// A slot whose tasks a and b failed before its last task c: a ended
	// 30 s before now, b 20 s, c 10 s.
	crashLoop := func(opts ...taskOpt) []*typesv1.Task {
		return with(running(1),
			task(2, FAILED, SHUTDOWN, append([]taskOpt{id("a"), created(-40 * time.Second), at(-30 * time.Second), exit(1)}, opts...)...),
			task(2, FAILED, SHUTDOWN, append([]taskOpt{id("b"), created(-25 * time.Second), at(-20 * time.Second), exit(1)}, opts...)...),
			task(2, FAILED, RUNNING, id("c"), created(-15*time.Second), at(-10*time.Second), exit(1)),
		)
	}
	run(t, []tc{{
		name:  "a failed task is replaced in its slot",
		svc:   svc(3, any0),
		tasks: with(running(1, 3), task(2, FAILED, RUNNING, exit(1), at(-time.Second))),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "any: a completed task is replaced too",
		svc:   svc(2, any0),
		tasks: with(running(1), task(2, COMPLETE, RUNNING, exit(0))),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "any: a shut down task is replaced at once whatever the delay",
		svc:   svc(2),
		tasks: with(running(1), task(2, SHUTDOWN, RUNNING, at(-time.Second))),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "on-failure: exit 0 is not replaced",
		svc:   svc(2, onFailure),
		tasks: with(running(1), task(2, COMPLETE, RUNNING, exit(0))),
		want:  summary{update: []string{"s2"}},
	}, {
		name:  "on-failure: exit 1 is replaced",
		svc:   svc(2, onFailure),
		tasks: with(running(1), task(2, FAILED, RUNNING, exit(1))),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "on-failure: a rejected task is replaced",
		svc:   svc(2, onFailure),
		tasks: with(running(1), task(2, REJECTED, RUNNING)),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "none: never replaced",
		svc:   svc(2, none),
		tasks: with(running(1), task(2, FAILED, RUNNING, exit(1))),
		want:  summary{update: []string{"s2"}},
	}, {
		name:  "none: a done slot still counts as a replica",
		svc:   svc(2, none),
		tasks: with(running(1), task(2, COMPLETE, SHUTDOWN)),
	}, {
		name:  "none: a task of an older spec that ended is rerun with the current one",
		svc:   svc(2, none),
		tasks: with(running(1), task(2, COMPLETE, SHUTDOWN, old())),
		want:  summary{create: []string{"web.2"}},
	}, {
		name:  "delay: the old task stops now, the replacement waits",
		svc:   svc(2),
		tasks: with(running(1), task(2, FAILED, RUNNING, at(-2*time.Second))),
		want:  summary{update: []string{"s2"}, requeue: 3 * time.Second},
	}, {
		name:  "delay: still pending",
		svc:   svc(2),
		tasks: with(running(1), task(2, FAILED, SHUTDOWN, at(-2*time.Second))),
		want:  summary{requeue: 3 * time.Second},
	}, {
		name:  "delay: replaced once it has passed",
		svc:   svc(2),
		tasks: with(running(1), task(2, FAILED, SHUTDOWN, at(-2*time.Second))),
		now:   3 * time.Second,
		want:  summary{create: []string{"web.2"}},
	}, {
		name:  "delay: an explicit 0 replaces at once",
		svc:   svc(2, any0),
		tasks: with(running(1), task(2, FAILED, SHUTDOWN, at(-time.Millisecond))),
		want:  summary{create: []string{"web.2"}},
	}, {
		name:  "max attempts reached: no replacement",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 2, 0)),
		tasks: crashLoop(),
		want:  summary{update: []string{"c"}},
	}, {
		name:  "max attempts not reached",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 3, 0)),
		tasks: crashLoop(),
		want:  summary{update: []string{"c"}, create: []string{"web.2"}},
	}, {
		name:  "max attempts: failures before the window do not count",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 2, 15*time.Second)),
		tasks: crashLoop(),
		want:  summary{update: []string{"c"}, create: []string{"web.2"}},
	}, {
		name:  "max attempts: failures within the window count",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 2, 25*time.Second)),
		tasks: crashLoop(),
		want:  summary{update: []string{"c"}},
	}, {
		name:  "max attempts: the window is measured from the last failure, not now",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 2, 25*time.Second)),
		tasks: crashLoop(),
		now:   time.Hour,
		want:  summary{update: []string{"c"}},
	}, {
		name:  "max attempts: failures of an older spec do not count",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 2, 0)),
		tasks: crashLoop(old()),
		want:  summary{update: []string{"c"}, create: []string{"web.2"}},
	}})
}

func TestNodes(t *testing.T) {
	on2 := func(st, desired typesv1.TaskState) []*typesv1.Task {
		return []*typesv1.Task{task(1, RUNNING, RUNNING, on("n1")), task(2, st, desired, on("n2"))}
	}
	run(t, []tc{{
		name:  "a task on a down node is treated as ended and replaced",
		svc:   svc(2),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), down("n2")},
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "a task on a removed node is treated as ended and replaced",
		svc:   svc(2),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1")},
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "a lost task follows the restart delay from its last status",
		svc:   svc(2),
		tasks: []*typesv1.Task{task(1, RUNNING, RUNNING, on("n1")), task(2, RUNNING, RUNNING, on("n2"), at(-time.Second))},
		nodes: []*typesv1.Node{ready("n1"), down("n2")},
		want:  summary{update: []string{"s2"}, requeue: 4 * time.Second},
	}, {
		name:  "a lost task is a failure for on-failure",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_ON_FAILURE, 0, 0, 0)),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), down("n2")},
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "a lost task is not replaced under restart none",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_NONE, 0, 0, 0)),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), down("n2")},
		want:  summary{update: []string{"s2"}},
	}, {
		name:  "a task stopping on a down node does not hold its slot",
		svc:   svc(2),
		tasks: with(on2(RUNNING, SHUTDOWN), task(2, NEW, RUNNING, id("new"))),
		nodes: []*typesv1.Node{ready("n1"), down("n2")},
	}, {
		name:  "an orphaned task is replaced",
		svc:   svc(2),
		tasks: on2(ORPHANED, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), ready("n2")},
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "a drained node's task moves at once, whatever the restart policy",
		svc:   svc(2, restart(typesv1.RestartPolicy_CONDITION_NONE, time.Minute, 0, 0)),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), availability("n2", typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN)},
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "a paused node keeps its task",
		svc:   svc(2),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), availability("n2", typesv1.NodeAvailability_NODE_AVAILABILITY_PAUSE)},
	}, {
		name:  "a disconnected node keeps its task",
		svc:   svc(2),
		tasks: on2(RUNNING, RUNNING),
		nodes: []*typesv1.Node{ready("n1"), node("n2", typesv1.NodeState_NODE_STATE_DISCONNECTED, 0)},
	}, {
		name:  "no node listed: no task is judged by its node",
		svc:   svc(2),
		tasks: on2(RUNNING, RUNNING),
	}})
}

// history returns n ended tasks of a slot, h<slot>-1 the oldest.
func history(slot uint64, n int) []*typesv1.Task {
	var ts []*typesv1.Task
	for i := 1; i <= n; i++ {
		ts = append(ts, task(slot, SHUTDOWN, SHUTDOWN, id(fmt.Sprintf("h%d-%d", slot, i)), created(-time.Duration(100-i)*time.Minute)))
	}
	return ts
}

func TestHistory(t *testing.T) {
	run(t, []tc{{
		name:  "at most 5 ended tasks per slot by default",
		svc:   svc(2),
		tasks: with(running(1, 2), append(history(1, 6), history(2, 5)...)...),
		want:  summary{delete: []string{"h1-1"}},
	}, {
		name:  "the cluster's limit",
		svc:   svc(1),
		tasks: with(running(1), history(1, 6)...),
		limit: 2,
		want:  summary{delete: []string{"h1-1", "h1-2", "h1-3", "h1-4"}},
	}, {
		name:  "a task that ends in this pass counts",
		svc:   svc(1, noDelay()),
		tasks: with(history(1, 2), task(1, FAILED, RUNNING)),
		limit: 2,
		want:  summary{update: []string{"s1"}, create: []string{"web.1"}, delete: []string{"h1-1"}},
	}, {
		name:  "a task stopping is not history yet",
		svc:   svc(1),
		tasks: with(history(1, 2), task(1, RUNNING, SHUTDOWN, id("stopping"), created(-time.Minute)), task(1, RUNNING, RUNNING)),
		limit: 2,
	}, {
		name:  "a negative limit keeps everything",
		svc:   svc(1),
		tasks: with(running(1), history(1, 20)...),
		limit: -1,
	}, {
		name:  "slots scaled away keep their history too",
		svc:   svc(1),
		tasks: with(running(1), history(2, 7)...),
		want:  summary{delete: []string{"h2-1", "h2-2"}},
	}})
}

func TestRemovedService(t *testing.T) {
	nodes := []*typesv1.Node{ready("n1"), down("n2")}
	run(t, []tc{{
		name:  "running tasks shut down, done ones deleted",
		nodes: nodes,
		tasks: []*typesv1.Task{
			task(1, RUNNING, RUNNING, on("n1")),
			task(2, FAILED, SHUTDOWN, on("n1")),
			task(3, NEW, RUNNING),
			task(4, RUNNING, RUNNING, on("n2")),
			task(5, RUNNING, SHUTDOWN, on("n1")),
			task(6, ASSIGNED, RUNNING, on("n1")),
		},
		want: summary{update: []string{"s1", "s6"}, delete: []string{"s2", "s3", "s4"}},
	}, {
		name:  "once all ended, all are deleted",
		nodes: nodes,
		tasks: []*typesv1.Task{task(1, SHUTDOWN, SHUTDOWN, on("n1")), task(5, COMPLETE, RUNNING, on("n1")), task(6, SHUTDOWN, REMOVE, on("n1"))},
		want:  summary{delete: []string{"s1", "s5", "s6"}},
	}, {
		name:  "a task already told to go is left to stop",
		nodes: nodes,
		tasks: []*typesv1.Task{task(1, RUNNING, REMOVE, on("n1"))},
	}})
}
