package deploy

import (
	"time"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// restartAllowed applies the service's restart policy to the last task of
// a slot, which ended by itself.
//
// max_attempts counts the slot's earlier tasks of the current spec that
// ended by themselves, each of which was followed by a restart; the window
// is measured back from the last task's end, not from now, so that the
// answer does not change while the slot waits: a slot that has used its
// attempts stays done. Only tasks still in the store count, so a
// max_attempts above the history limit is never reached.
func (p *pass) restartAllowed(s *slot, last *typesv1.Task) bool {
	rp := p.svc.GetSpec().GetTask().GetRestart()
	switch rp.GetCondition() {
	case typesv1.RestartPolicy_CONDITION_NONE:
		return false
	case typesv1.RestartPolicy_CONDITION_ON_FAILURE:
		// Only a clean exit is not a failure: a failed, rejected or
		// orphaned task, a non-zero exit and a lost node all are.
		if state(last) == typesv1.TaskState_TASK_STATE_COMPLETE &&
			last.GetStatus().GetContainer().GetExitCode() == 0 {
			return false
		}
	}
	limit := rp.GetMaxAttempts()
	if limit == 0 {
		return true
	}
	end := statusTime(last)
	window := duration(rp.GetWindow(), 0)
	var restarts uint64
	for _, t := range s.tasks {
		if t == last || !p.endedByItself(t) || !p.isCurrent(t) {
			continue
		}
		if window > 0 && statusTime(t).Before(end.Add(-window)) {
			continue
		}
		restarts++
	}
	return restarts < limit
}

func (p *pass) restartDelay() time.Duration {
	return duration(p.svc.GetSpec().GetTask().GetRestart().GetDelay(), DefaultRestartDelay)
}
