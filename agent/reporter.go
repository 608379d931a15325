package agent

import (
	"context"
	"sync"
	"time"

	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// maxBatch bounds one UpdateTaskStatus call, far below gRPC's 4 MB
// message limit even with long error texts.
const maxBatch = 500

// reporter collects task statuses and sends them in batches: the latest
// status of a task replaces any unsent one, so a task that went through
// four states in one flush interval costs one entry. It outlives sessions;
// what a session could not send waits for the next one.
type reporter struct {
	mu      sync.Mutex
	pending map[string]*typesv1.TaskStatus
	kick    chan struct{} // has a value when pending is not empty
}

func newReporter() *reporter {
	return &reporter{pending: map[string]*typesv1.TaskStatus{}, kick: make(chan struct{}, 1)}
}

// report queues a status; the caller does not change it afterwards.
func (r *reporter) report(taskID string, s *typesv1.TaskStatus) {
	r.mu.Lock()
	r.pending[taskID] = s
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// isPending reports whether a status of the task waits to be sent.
func (r *reporter) isPending(taskID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.pending[taskID]
	return ok
}

// take removes up to maxBatch pending statuses for sending.
func (r *reporter) take() []*dispatcherv1.TaskStatusUpdate {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*dispatcherv1.TaskStatusUpdate, 0, min(len(r.pending), maxBatch))
	for id, s := range r.pending {
		if len(out) == maxBatch {
			break
		}
		out = append(out, &dispatcherv1.TaskStatusUpdate{TaskId: id, Status: s})
		delete(r.pending, id)
	}
	return out
}

// putBack returns statuses that could not be sent, unless a newer one of
// the same task was queued meanwhile.
func (r *reporter) putBack(us []*dispatcherv1.TaskStatusUpdate) {
	r.mu.Lock()
	for _, u := range us {
		if _, ok := r.pending[u.TaskId]; !ok {
			r.pending[u.TaskId] = u.Status
		}
	}
	n := len(r.pending)
	r.mu.Unlock()
	if n > 0 {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// run sends the pending statuses through one session until ctx ends or a
// call fails; then the unsent statuses stay for the next session. After
// the first status of a quiet period it waits one interval, so that the
// burst a task start makes goes out as one call.
func (r *reporter) run(ctx context.Context, client dispatcherv1.DispatcherClient, sessionID string, interval time.Duration) error {
	timer := time.NewTimer(interval)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		}
		timer.Reset(interval)
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		for {
			batch := r.take()
			if len(batch) == 0 {
				break
			}
			if _, err := client.UpdateTaskStatus(ctx, &dispatcherv1.UpdateTaskStatusRequest{SessionId: sessionID, Updates: batch}); err != nil {
				r.putBack(batch)
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
}
