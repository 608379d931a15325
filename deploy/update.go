package deploy

import (
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// updateConfig is the update (or, while rolling back, the rollback) config
// of a service with Docker's defaults filled in.
type updateConfig struct {
	rollingBack   bool // the service is rolling back: use spec.rollback
	parallelism   int  // 0: all at once
	delay         time.Duration
	monitor       time.Duration
	failureAction typesv1.UpdateConfig_FailureAction
	maxFailures   float32
	startFirst    bool
}

func newUpdateConfig(svc *typesv1.Service) updateConfig {
	st := svc.GetUpdateStatus().GetState()
	c := updateConfig{
		rollingBack: st == typesv1.UpdateStatus_STATE_ROLLBACK_STARTED || st == typesv1.UpdateStatus_STATE_ROLLBACK_PAUSED,
	}
	uc := svc.GetSpec().GetUpdate()
	if c.rollingBack {
		uc = svc.GetSpec().GetRollback()
	}
	// A config that is absent altogether means Docker's defaults; one
	// that is present means what it says, parallelism 0 being "all".
	c.parallelism = 1
	if uc != nil {
		c.parallelism = int(min(uc.GetParallelism(), uint64(1<<31-1)))
	}
	c.delay = duration(uc.GetDelay(), 0)
	c.monitor = duration(uc.GetMonitor(), DefaultMonitor)
	c.failureAction = uc.GetFailureAction()
	c.maxFailures = uc.GetMaxFailureRatio()
	c.startFirst = uc.GetOrder() == typesv1.UpdateConfig_ORDER_START_FIRST
	return c
}

// rollingUpdate moves a rolling update on by one step. Its whole state is
// in the store: the service's update status (state and start time) and the
// tasks. A task belongs to the update when it runs the current spec and
// was created since the update started. The update goes batch by batch: a
// batch starts only when no task of the update is in flight (not yet
// RUNNING, or RUNNING for less than the monitor period) and the delay has
// passed since the last one settled.
//
// It returns the service to roll back to when a failure calls for it.
func (p *pass) rollingUpdate(slots map[slotKey]*slot, kept []*slot) *typesv1.Service {
	st := p.svc.GetUpdateStatus().GetState()
	paused := st == typesv1.UpdateStatus_STATE_PAUSED || st == typesv1.UpdateStatus_STATE_ROLLBACK_PAUSED
	inProgress := st == typesv1.UpdateStatus_STATE_UPDATING || st == typesv1.UpdateStatus_STATE_ROLLBACK_STARTED
	started := asTime(p.svc.GetUpdateStatus().GetStartedAt())

	var outdated []*slot
	for _, s := range kept {
		// A paused global node cannot take the new task: its slot
		// neither takes part in the update nor holds up its end.
		if s.kind == kindLive && s.outdated && s.canCreate {
			outdated = append(outdated, s)
		}
	}
	if inProgress && started.IsZero() {
		// Tasks of the update are told by their creation after the
		// start; without a start every task of the spec would count,
		// its old failures included. Stamp it now.
		started = p.now
		p.status = proto.Clone(p.svc.GetUpdateStatus()).(*typesv1.UpdateStatus)
		p.status.StartedAt = timestamppb.New(p.now)
	}
	if !inProgress {
		// A paused update stays paused until the service is updated
		// again (the control API resets the status); a service that
		// runs its spec everywhere keeps the status it has.
		if paused || len(outdated) == 0 {
			return nil
		}
		started = p.now
		p.status = &typesv1.UpdateStatus{
			State:     typesv1.UpdateStatus_STATE_UPDATING,
			StartedAt: timestamppb.New(p.now),
			Message:   "update in progress",
		}
	}

	if failures, first := p.updateFailures(slots, started); failures > 0 &&
		float32(failures) > p.cfg.maxFailures*float32(len(kept)) {
		switch {
		case p.cfg.failureAction == typesv1.UpdateConfig_FAILURE_ACTION_CONTINUE:
		case p.cfg.failureAction == typesv1.UpdateConfig_FAILURE_ACTION_ROLLBACK &&
			!p.cfg.rollingBack && p.svc.GetPreviousSpec() != nil:
			return p.rollbackService(first)
		default:
			// Pausing is also what a failed rollback, or a
			// rollback with no previous spec to go back to, does.
			p.pause(first)
			return nil
		}
	}

	inFlight := 0
	var settled time.Time // when the last task of the update became stable
	for _, s := range kept {
		if !s.canCreate {
			continue
		}
		if s.kind == kindFree || s.kind == kindRestart {
			// Created by this pass: in flight from now on.
			inFlight++
			continue
		}
		k := s.keeper
		if s.kind != kindLive || !p.isCurrent(k) || createdAt(k).Before(started) {
			continue
		}
		if state(k) != typesv1.TaskState_TASK_STATE_RUNNING {
			inFlight++
			continue
		}
		stable := statusTime(k).Add(p.cfg.monitor)
		if p.now.Before(stable) {
			inFlight++
			p.wait(stable.Sub(p.now))
			continue
		}
		if stable.After(settled) {
			settled = stable
		}
	}
	if inFlight > 0 {
		return nil
	}
	if len(outdated) == 0 {
		done := &typesv1.UpdateStatus{
			State:       typesv1.UpdateStatus_STATE_COMPLETED,
			StartedAt:   timestamppb.New(started),
			CompletedAt: timestamppb.New(p.now),
			Message:     "update completed",
		}
		if p.cfg.rollingBack {
			done.State = typesv1.UpdateStatus_STATE_ROLLBACK_COMPLETED
			done.Message = "rollback completed"
		}
		p.status = done
		return nil
	}
	if !settled.IsZero() {
		if next := settled.Add(p.cfg.delay); p.now.Before(next) {
			p.wait(next.Sub(p.now))
			return nil
		}
	}
	n := p.cfg.parallelism
	if n == 0 || n > len(outdated) {
		n = len(outdated)
	}
	for _, s := range outdated[:n] {
		s.replace = true
		if !p.cfg.startFirst {
			p.shutdown(s.keeper)
		}
	}
	return nil
}

// updateFailures counts the tasks of the update that ended by themselves
// while they were watched, and returns the first of them (by end time). A
// task that ended after a later batch had started was stable before that
// batch (batches wait for stability), so it is no longer watched; this is
// how the monitor period is told without remembering anything. A task
// that ends while its own batch is the latest counts even when it ran
// longer than the monitor period: the nearest stateless reading, and a
// new task dying before the next batch is reason enough to stop anyway.
// As in swarmkit, a task that completes counts: the update cannot tell
// an early exit from a crash. A lost node is not the new spec's fault.
func (p *pass) updateFailures(slots map[slotKey]*slot, started time.Time) (int, *typesv1.Task) {
	isUpdateTask := func(t *typesv1.Task) bool {
		return p.isCurrent(t) && !createdAt(t).Before(started)
	}
	// Batch starts: when the update put a task of the current spec in a
	// slot that had run another spec.
	var starts []time.Time
	for _, s := range slots {
		sawOld := false
		for _, t := range s.tasks {
			if !p.isCurrent(t) {
				sawOld = true
			} else if sawOld && isUpdateTask(t) {
				starts = append(starts, createdAt(t))
			}
		}
	}
	var failed []*typesv1.Task
	for _, s := range slots {
		for _, t := range s.tasks {
			switch state(t) {
			case typesv1.TaskState_TASK_STATE_COMPLETE, typesv1.TaskState_TASK_STATE_FAILED, typesv1.TaskState_TASK_STATE_REJECTED:
			default:
				continue
			}
			if !isUpdateTask(t) {
				continue
			}
			created, ended := createdAt(t), statusTime(t)
			if slices.ContainsFunc(starts, func(b time.Time) bool { return b.After(created) && b.Before(ended) }) {
				continue
			}
			failed = append(failed, t)
		}
	}
	if len(failed) == 0 {
		return 0, nil
	}
	first := slices.MinFunc(failed, func(a, b *typesv1.Task) int {
		if c := statusTime(a).Compare(statusTime(b)); c != 0 {
			return c
		}
		return olderFirst(a, b)
	})
	return len(failed), first
}

func (p *pass) pause(failed *typesv1.Task) {
	st := &typesv1.UpdateStatus{
		State:     typesv1.UpdateStatus_STATE_PAUSED,
		StartedAt: p.svc.GetUpdateStatus().GetStartedAt(),
		Message:   "update paused due to failure or early termination of task " + failed.GetId(),
	}
	if p.status != nil {
		st.StartedAt = p.status.GetStartedAt()
	}
	if p.cfg.rollingBack {
		st.State = typesv1.UpdateStatus_STATE_ROLLBACK_PAUSED
		st.Message = "rollback paused due to failure or early termination of task " + failed.GetId()
	}
	p.status = st
}

// rollbackService returns the service with its previous spec restored, as
// swarmkit's automatic rollback does: the previous spec is consumed, and
// the rollback is a rollout of its own, started now. SpecVersion counts
// spec changes, and going back is one.
func (p *pass) rollbackService(failed *typesv1.Task) *typesv1.Service {
	s := proto.Clone(p.svc).(*typesv1.Service)
	s.Spec = s.PreviousSpec
	s.PreviousSpec = nil
	s.SpecVersion++
	s.UpdateStatus = &typesv1.UpdateStatus{
		State:     typesv1.UpdateStatus_STATE_ROLLBACK_STARTED,
		StartedAt: timestamppb.New(p.now),
		Message:   "update rolled back due to failure or early termination of task " + failed.GetId(),
	}
	return s
}
