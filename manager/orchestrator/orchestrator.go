// Package orchestrator holds the leader's control loops: the orchestrator,
// which runs the pure reconcilers of package deploy for every service whose
// tasks or spec changed, and the scheduler loop, which moves new tasks to
// PENDING and places pending ones with package scheduler. Both read the
// store, decide with pure functions, and write the difference as batches.
package orchestrator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/shoal-dev/shoal/deploy"
	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// DefaultHistoryLimit is how many ended tasks are kept per slot.
const DefaultHistoryLimit = 5

// Orchestrator keeps every service's tasks as its spec wants them.
type Orchestrator struct {
	Store *store.Store
	Prop  store.Proposer
	Log   *slog.Logger
	Now   func() time.Time
}

// Run reconciles until ctx ends.
func (o *Orchestrator) Run(ctx context.Context) {
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "orchestrator")
	for ctx.Err() == nil {
		o.run(ctx, log)
	}
}

// run is one watch session: everything is dirty at its start, so a dropped
// watch (the store drops a watcher that lags) costs a full pass, nothing else.
func (o *Orchestrator) run(ctx context.Context, log *slog.Logger) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dirty := map[string]bool{}
	events := o.Store.ViewAndWatch(wctx, func(tx store.ReadTx) {
		svcs, _ := store.FindServices(tx, store.All)
		for _, s := range svcs {
			dirty[s.GetId()] = true
		}
		tasks, _ := store.FindTasks(tx, store.All)
		for _, t := range tasks {
			dirty[t.GetServiceId()] = true
		}
	})
	due := map[string]time.Time{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := o.Now()
		for id, at := range due {
			if !now.Before(at) {
				dirty[id] = true
				delete(due, id)
			}
		}
		for id := range dirty {
			requeue, err := o.reconcile(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("reconcile service", "service.id", id, "err", err)
				requeue = 500 * time.Millisecond
			}
			if requeue > 0 {
				at := o.Now().Add(requeue)
				if cur, ok := due[id]; !ok || at.Before(cur) {
					due[id] = at
				}
			}
		}
		clear(dirty)
		next := time.Hour
		for _, at := range due {
			if d := at.Sub(o.Now()); d < next {
				next = max(d, time.Millisecond)
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			continue
		case ev, ok := <-events:
			if !ok {
				return
			}
			markDirty(dirty, ev)
		}
		// Coalesce a burst (an agent's batched statuses, a deploy) into
		// one pass.
		drain := time.After(2 * time.Millisecond)
	burst:
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				markDirty(dirty, ev)
			case <-drain:
				break burst
			}
		}
	}
}

func markDirty(dirty map[string]bool, ev store.Event) {
	switch obj := ev.Object.(type) {
	case *typesv1.Service:
		dirty[obj.GetId()] = true
	case *typesv1.Task:
		dirty[obj.GetServiceId()] = true
	case *typesv1.Node:
		// Node state decides global tasks and replacements of tasks on
		// down nodes; a node event is rare, so look at everything.
		dirty["*"] = true
	}
}

// reconcile runs deploy.Reconcile for one service ("*": all) and writes
// the result.
func (o *Orchestrator) reconcile(ctx context.Context, id string) (time.Duration, error) {
	if id == "*" {
		var ids []string
		o.Store.View(func(tx store.ReadTx) {
			svcs, _ := store.FindServices(tx, store.All)
			for _, s := range svcs {
				ids = append(ids, s.GetId())
			}
		})
		var requeue time.Duration
		for _, sid := range ids {
			r, err := o.reconcile(ctx, sid)
			if err != nil {
				return 0, err
			}
			if r > 0 && (requeue == 0 || r < requeue) {
				requeue = r
			}
		}
		return requeue, nil
	}
	for attempt := 0; ; attempt++ {
		var res deploy.Result
		// One clock reading for the reconcile and the batch: deploy
		// compares a task's creation time with the update's start time.
		now := o.Now()
		b := store.NewBatch(now)
		o.Store.View(func(tx store.ReadTx) {
			in := deploy.Input{
				Service:      store.GetService(tx, id),
				Now:          now,
				HistoryLimit: DefaultHistoryLimit,
				NewID:        identity.NewID,
				Eligible:     eligible,
			}
			in.Tasks, _ = store.FindTasks(tx, store.ByServiceID(id))
			in.Nodes, _ = store.FindNodes(tx, store.All)
			if cs, _ := store.FindClusters(tx, store.All); len(cs) > 0 {
				if l := cs[0].GetSpec().GetTaskHistoryLimit(); l > 0 {
					in.HistoryLimit = int(l)
				}
			}
			res = deploy.Reconcile(in)
			for _, t := range res.Create {
				b.CreateTask(t)
			}
			for _, t := range res.Update {
				b.UpdateTask(t)
			}
			for _, tid := range res.Delete {
				if t := store.GetTask(tx, tid); t != nil {
					b.DeleteTask(t)
				}
			}
			if res.ServiceUpdate != nil {
				b.UpdateService(res.ServiceUpdate)
			}
		})
		if b.Len() == 0 {
			return res.Requeue, nil
		}
		_, err := o.Prop.Propose(ctx, b.Proto())
		if err == nil {
			return res.Requeue, nil
		}
		if !errors.Is(err, store.ErrSequenceConflict) || attempt >= 5 {
			return 0, err
		}
	}
}

// eligible says whether a global service's task belongs on a node: the
// node is ready, active, and meets the placement constraints.
func eligible(n *typesv1.Node, t *typesv1.Task) bool {
	if n.GetStatus().GetState() != typesv1.NodeState_NODE_STATE_READY || n.GetSpec().GetAvailability() != typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE {
		return false
	}
	cs, err := scheduler.ParseConstraints(t.GetSpec().GetPlacement().GetConstraints())
	if err != nil {
		return false
	}
	return scheduler.NodeMatches(cs, n)
}
