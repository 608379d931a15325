package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/manager/allocator"
	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

// Scheduler is the loop around package scheduler: NEW tasks become
// PENDING (the allocator's step; networks will add address allocation
// here), PENDING tasks get a node and become ASSIGNED, or keep the reason
// none fits where `service ps` shows it. Tasks told to stop before they
// reached a node are shut down here, since no agent will.
type Scheduler struct {
	Store *store.Store
	Prop  store.Proposer
	Log   *slog.Logger
	Now   func() time.Time
}

// Run schedules until ctx ends.
func (s *Scheduler) Run(ctx context.Context) {
	if s.Now == nil {
		s.Now = time.Now
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "scheduler")
	for ctx.Err() == nil {
		s.run(ctx, log)
	}
}

func (s *Scheduler) run(ctx context.Context, log *slog.Logger) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.Store.ViewAndWatch(wctx, func(store.ReadTx) {})
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for {
		if err := s.pass(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("scheduling pass", "err", err)
			retry.Reset(200 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		case _, ok := <-events:
			if !ok {
				return
			}
			drain := time.After(2 * time.Millisecond)
		burst:
			for {
				select {
				case _, ok := <-events:
					if !ok {
						return
					}
				case <-drain:
					break burst
				}
			}
		}
	}
}

func (s *Scheduler) log() *slog.Logger {
	if s.Log == nil {
		return slog.Default()
	}
	return s.Log
}

func setStatus(t *typesv1.Task, st typesv1.TaskState, msg, errText string, now time.Time) {
	t.Status = &typesv1.TaskStatus{State: st, Message: msg, Err: errText, Timestamp: timestamppb.New(now)}
}

// pass looks at every task that has not reached a node yet.
func (s *Scheduler) pass(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		now := s.Now()
		b := store.NewBatch(now)
		var passErr error
		s.Store.View(func(tx store.ReadTx) {
			tasks, _ := store.FindTasks(tx, store.All)
			nodes, _ := store.FindNodes(tx, store.All)
			nets, _ := store.FindNetworks(tx, store.All)
			svcs, _ := store.FindServices(tx, store.All)

			// Allocation first: subnets, VIPs and ports, then each new
			// task's addresses. The allocator is rebuilt from the store on
			// every pass, so what it knows can never drift from what is
			// stored, and ended tasks' addresses are free again.
			al, err := allocator.New(nets, svcs, tasks)
			if err != nil {
				passErr = fmt.Errorf("allocator: %w", err)
				return
			}
			for _, n := range nets {
				if changed, err := al.AllocateNetwork(n); err != nil {
					s.log().Warn("allocate network", "network.name", n.GetSpec().GetAnnotations().GetName(), "err", err)
				} else if changed {
					b.UpdateNetwork(n)
				}
			}
			svcByID := map[string]*typesv1.Service{}
			for _, svc := range svcs {
				svcByID[svc.GetId()] = svc
				if changed, err := al.AllocateService(svc); err != nil {
					s.log().Warn("allocate service", "service.name", svc.GetSpec().GetAnnotations().GetName(), "err", err)
				} else if changed {
					b.UpdateService(svc)
				}
			}

			var pending []*typesv1.Task
			for _, t := range tasks {
				st := t.GetStatus().GetState()
				if st >= typesv1.TaskState_TASK_STATE_ASSIGNED {
					continue
				}
				if t.GetDesiredState() > typesv1.TaskState_TASK_STATE_RUNNING {
					setStatus(t, typesv1.TaskState_TASK_STATE_SHUTDOWN, "shutdown before it was scheduled", "", now)
					b.UpdateTask(t)
					continue
				}
				if st == typesv1.TaskState_TASK_STATE_NEW {
					svc := svcByID[t.GetServiceId()]
					if svc == nil {
						continue // its service is gone; the orchestrator shuts it down
					}
					if _, err := al.AllocateTask(t, svc); err != nil {
						// Stays NEW with the reason, e.g. "could not find an
						// available IP on network x"; retried on the next pass.
						if t.GetStatus().GetErr() != err.Error() {
							setStatus(t, typesv1.TaskState_TASK_STATE_NEW, "pending task allocation", err.Error(), now)
							b.UpdateTask(t)
						}
						continue
					}
				}
				pending = append(pending, t)
			}
			if len(pending) == 0 {
				return
			}
			byNode := map[string][]*typesv1.Task{}
			for _, t := range tasks {
				if t.GetNodeId() != "" && t.GetStatus().GetState() >= typesv1.TaskState_TASK_STATE_ASSIGNED {
					byNode[t.GetNodeId()] = append(byNode[t.GetNodeId()], t)
				}
			}
			infos := make([]*scheduler.NodeInfo, 0, len(nodes))
			for _, n := range nodes {
				infos = append(infos, scheduler.NewNodeInfo(n, byNode[n.GetId()]))
			}
			byID := map[string]*typesv1.Task{}
			for _, t := range pending {
				byID[t.GetId()] = t
			}
			for _, d := range scheduler.Schedule(infos, pending) {
				t := byID[d.TaskID]
				if t == nil {
					continue
				}
				if d.NodeID == "" {
					// Still pending: write only when the state or the
					// reason changed, so that a task waiting for room does
					// not churn the log on every pass.
					old := t.GetStatus()
					if old.GetState() == typesv1.TaskState_TASK_STATE_PENDING && old.GetErr() == d.Reason {
						continue
					}
					setStatus(t, typesv1.TaskState_TASK_STATE_PENDING, "pending task scheduling", d.Reason, now)
					b.UpdateTask(t)
					continue
				}
				t.NodeId = d.NodeID
				setStatus(t, typesv1.TaskState_TASK_STATE_ASSIGNED, "scheduler assigned task to node", "", now)
				b.UpdateTask(t)
			}
		})
		if passErr != nil {
			return passErr
		}
		if b.Len() == 0 {
			return nil
		}
		_, err := s.Prop.Propose(ctx, b.Proto())
		if err == nil || !errors.Is(err, store.ErrSequenceConflict) || attempt >= 5 {
			return err
		}
	}
}
