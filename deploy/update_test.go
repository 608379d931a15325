package deploy

import (
	"testing"
	"time"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

const (
	second = time.Second
	minute = time.Minute

	updating   = typesv1.UpdateStatus_STATE_UPDATING
	paused     = typesv1.UpdateStatus_STATE_PAUSED
	completed  = typesv1.UpdateStatus_STATE_COMPLETED
	rbStarted  = typesv1.UpdateStatus_STATE_ROLLBACK_STARTED
	rbPaused   = typesv1.UpdateStatus_STATE_ROLLBACK_PAUSED
	rbComplete = typesv1.UpdateStatus_STATE_ROLLBACK_COMPLETED
)

// outdated returns tasks of the previous spec running in these slots.
func outdated(slots ...uint64) []*typesv1.Task {
	var ts []*typesv1.Task
	for _, s := range slots {
		ts = append(ts, task(s, RUNNING, RUNNING, old()))
	}
	return ts
}

// replaced returns, for a slot the update has reached, the old task
// (stopped) and the update's task u<slot>, created at c and in state st
// since s.
func replaced(slot uint64, st, desired typesv1.TaskState, c, s time.Duration, opts ...taskOpt) []*typesv1.Task {
	u := task(slot, st, desired, append([]taskOpt{id("u" + string(rune('0'+slot))), created(c), at(s)}, opts...)...)
	return []*typesv1.Task{task(slot, SHUTDOWN, SHUTDOWN, old()), u}
}

func concat(parts ...[]*typesv1.Task) []*typesv1.Task {
	var ts []*typesv1.Task
	for _, p := range parts {
		ts = append(ts, p...)
	}
	return ts
}

func TestRollingUpdate(t *testing.T) {
	startFirst := &typesv1.UpdateConfig{Parallelism: 1, Order: typesv1.UpdateConfig_ORDER_START_FIRST}
	delayed := &typesv1.UpdateConfig{Parallelism: 1, Delay: dur(10 * second), Monitor: dur(5 * second)}
	inProgress := status(updating, t0.Add(-minute))
	run(t, []tc{{
		name:  "starts: stop-first, one slot at a time by default",
		svc:   svc(3),
		tasks: outdated(1, 2, 3),
		want: summary{update: []string{"s1"}, create: []string{"web.1"},
			status: updating, message: "update in progress"},
	}, {
		name:  "parallelism 2",
		svc:   svc(3, update(&typesv1.UpdateConfig{Parallelism: 2})),
		tasks: outdated(1, 2, 3),
		want:  summary{update: []string{"s1", "s2"}, create: []string{"web.1", "web.2"}, status: updating},
	}, {
		name:  "parallelism 0 updates every slot at once",
		svc:   svc(3, update(&typesv1.UpdateConfig{})),
		tasks: outdated(1, 2, 3),
		want:  summary{update: []string{"s1", "s2", "s3"}, create: []string{"web.1", "web.2", "web.3"}, status: updating},
	}, {
		name:  "force_update is a change of spec",
		svc:   svc(2, func(s *typesv1.Service) { s.Spec.Task.ForceUpdate = 1 }),
		tasks: running(1, 2),
		want:  summary{update: []string{"s1"}, create: []string{"web.1"}, status: updating},
	}, {
		name:  "waits while the batch is starting",
		svc:   svc(3, inProgress),
		tasks: concat(replaced(1, STARTING, RUNNING, -30*second, -20*second), outdated(2, 3)),
	}, {
		name:  "waits while the old task of the batch is still stopping",
		svc:   svc(3, inProgress),
		tasks: concat([]*typesv1.Task{task(1, RUNNING, SHUTDOWN, old()), task(1, NEW, RUNNING, id("u1"), since(-30*second))}, outdated(2, 3)),
	}, {
		name:  "waits for the monitor period",
		svc:   svc(3, inProgress),
		tasks: concat(replaced(1, RUNNING, RUNNING, -30*second, -2*second), outdated(2, 3)),
		want:  summary{requeue: 3 * second},
	}, {
		name:  "next batch once the batch is stable",
		svc:   svc(3, inProgress),
		tasks: concat(replaced(1, RUNNING, RUNNING, -30*second, -5*second), outdated(2, 3)),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "waits the delay between batches",
		svc:   svc(3, inProgress, update(delayed)),
		tasks: concat(replaced(1, RUNNING, RUNNING, -12*second, -10*second), outdated(2, 3)),
		want:  summary{requeue: 5 * second},
	}, {
		name:  "next batch once the delay has passed",
		svc:   svc(3, inProgress, update(delayed)),
		tasks: concat(replaced(1, RUNNING, RUNNING, -20*second, -15*second), outdated(2, 3)),
		want:  summary{update: []string{"s2"}, create: []string{"web.2"}},
	}, {
		name:  "start-first: the new task is created, the old one kept",
		svc:   svc(2, update(startFirst)),
		tasks: outdated(1, 2),
		want:  summary{create: []string{"web.1"}, status: updating},
	}, {
		name:  "start-first: the old task runs on while the new one starts",
		svc:   svc(2, inProgress, update(startFirst)),
		tasks: concat(outdated(1, 2), []*typesv1.Task{task(1, STARTING, RUNNING, id("u1"), since(-10*second))}),
	}, {
		name:  "start-first: the old task stops once the new one runs",
		svc:   svc(2, inProgress, update(startFirst)),
		tasks: concat(outdated(1, 2), []*typesv1.Task{task(1, RUNNING, RUNNING, id("u1"), created(-10*second), at(0))}),
		want:  summary{update: []string{"s1"}, requeue: 5 * second},
	}, {
		name:  "completes when every slot runs the spec and is stable",
		svc:   svc(2, inProgress),
		tasks: concat(replaced(1, RUNNING, RUNNING, -50*second, -40*second), replaced(2, RUNNING, RUNNING, -30*second, -20*second)),
		want:  summary{status: completed, message: "update completed"},
	}, {
		name:  "completion waits for the monitor period of the last batch",
		svc:   svc(2, inProgress),
		tasks: concat(replaced(1, RUNNING, RUNNING, -50*second, -40*second), replaced(2, RUNNING, RUNNING, -2*second, -1*second)),
		want:  summary{requeue: 4 * second},
	}, {
		name:  "nothing outdated: the status is left alone",
		svc:   svc(2, status(completed, t0.Add(-time.Hour))),
		tasks: running(1, 2),
	}, {
		name:  "nothing outdated and no status: none is set",
		svc:   svc(2),
		tasks: running(1, 2),
	}, {
		name:  "a failure pauses the update",
		svc:   svc(3, inProgress),
		tasks: concat(replaced(1, FAILED, RUNNING, -30*second, -1*second), outdated(2, 3)),
		want: summary{update: []string{"u1"}, status: paused, requeue: 4 * second,
			message: "update paused due to failure or early termination of task u1"},
	}, {
		name:  "an early exit pauses the update too",
		svc:   svc(3, inProgress),
		tasks: concat(replaced(1, COMPLETE, RUNNING, -30*second, -1*second), outdated(2, 3)),
		want:  summary{update: []string{"u1"}, status: paused, requeue: 4 * second},
	}, {
		name:  "a paused update starts no batch, but restarts go on",
		svc:   svc(3, status(paused, t0.Add(-minute))),
		tasks: concat(replaced(1, FAILED, SHUTDOWN, -30*second, -10*second), outdated(2, 3)),
		want:  summary{create: []string{"web.1"}},
	}, {
		name:  "continue: a failure does not stop the update",
		svc:   svc(3, inProgress, update(&typesv1.UpdateConfig{Parallelism: 1, FailureAction: typesv1.UpdateConfig_FAILURE_ACTION_CONTINUE})),
		tasks: concat(replaced(1, FAILED, RUNNING, -30*second, -1*second), outdated(2, 3)),
		want:  summary{update: []string{"u1", "s2"}, create: []string{"web.2"}, requeue: 4 * second},
	}, {
		name:  "max failure ratio: failures up to the ratio are tolerated",
		svc:   svc(4, inProgress, update(&typesv1.UpdateConfig{Parallelism: 1, MaxFailureRatio: 0.5})),
		tasks: concat(replaced(1, FAILED, RUNNING, -30*second, -1*second), outdated(2, 3, 4)),
		want:  summary{update: []string{"u1", "s2"}, create: []string{"web.2"}, requeue: 4 * second},
	}, {
		name: "a task that fails after a later batch started is not the update's failure",
		svc:  svc(3, inProgress),
		tasks: concat(
			replaced(1, FAILED, RUNNING, -50*second, -1*second),
			replaced(2, RUNNING, RUNNING, -30*second, -25*second),
			outdated(3)),
		want: summary{update: []string{"u1", "s3"}, create: []string{"web.3"}, requeue: 4 * second},
	}, {
		name:  "rollback: the previous spec comes back and its rollout starts at once",
		svc:   svc(3, inProgress, update(&typesv1.UpdateConfig{Parallelism: 1, FailureAction: typesv1.UpdateConfig_FAILURE_ACTION_ROLLBACK})),
		tasks: concat(replaced(1, FAILED, RUNNING, -30*second, -1*second), outdated(2, 3)),
		want: summary{update: []string{"u1"}, create: []string{"web.1"}, status: rbStarted,
			message: "update rolled back due to failure or early termination of task u1"},
	}, {
		name: "rollback: without a previous spec the update pauses",
		svc: svc(3, inProgress, noPrevious(),
			update(&typesv1.UpdateConfig{Parallelism: 1, FailureAction: typesv1.UpdateConfig_FAILURE_ACTION_ROLLBACK})),
		tasks: concat(replaced(1, FAILED, RUNNING, -30*second, -1*second), outdated(2, 3)),
		want:  summary{update: []string{"u1"}, status: paused, requeue: 4 * second},
	}, {
		name:  "rollback: rolls out with the rollback config",
		svc:   svc(3, status(rbStarted, t0.Add(-minute)), rollbackConfig(&typesv1.UpdateConfig{Parallelism: 2})),
		tasks: concat(replaced(1, RUNNING, RUNNING, -50*second, -40*second), outdated(2, 3)),
		want:  summary{update: []string{"s2", "s3"}, create: []string{"web.2", "web.3"}},
	}, {
		name:  "rollback: completes",
		svc:   svc(2, status(rbStarted, t0.Add(-minute))),
		tasks: concat(replaced(1, RUNNING, RUNNING, -50*second, -40*second), replaced(2, RUNNING, RUNNING, -30*second, -20*second)),
		want:  summary{status: rbComplete, message: "rollback completed"},
	}, {
		name: "rollback: a failure pauses the rollback",
		svc: svc(3, status(rbStarted, t0.Add(-minute)),
			update(&typesv1.UpdateConfig{FailureAction: typesv1.UpdateConfig_FAILURE_ACTION_ROLLBACK})),
		tasks: concat(replaced(1, FAILED, RUNNING, -30*second, -1*second), outdated(2, 3)),
		want: summary{update: []string{"u1"}, status: rbPaused, requeue: 4 * second,
			message: "rollback paused due to failure or early termination of task u1"},
	}, {
		name:  "scale down during an update drops outdated slots like any other",
		svc:   svc(1, inProgress),
		tasks: concat(replaced(1, RUNNING, RUNNING, -30*second, -20*second), outdated(2, 3)),
		want:  summary{update: []string{"s2", "s3"}, status: completed},
	}})
}

func TestRollingUpdateWithoutStart(t *testing.T) {
	// An update status set without a start time (by hand, or by an older
	// manager) gets one, and old failures of the spec are not the update's.
	run(t, []tc{{
		name: "an update without a start time is stamped now",
		svc:  svc(2, func(s *typesv1.Service) { s.UpdateStatus = &typesv1.UpdateStatus{State: updating} }),
		tasks: concat(outdated(1, 2),
			[]*typesv1.Task{task(1, FAILED, SHUTDOWN, id("f"), created(-time.Hour), at(-50*minute))}),
		want: summary{update: []string{"s1"}, create: []string{"web.1"}, status: updating},
	}})
}
