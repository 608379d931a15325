package controlapi

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/store"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// LogOptions select a task's log entries.
type LogOptions struct {
	Follow bool
	Tail   int // -1: all
	Since  time.Time
}

// TaskLogsFunc reads one task's container log on this node and calls send
// for each entry until the log ends (or, following, until ctx ends).
type TaskLogsFunc func(ctx context.Context, t *typesv1.Task, o LogOptions, send func(stream string, line []byte, at time.Time) error) error

// ServiceLogs streams the logs of a service's tasks that ran on this node.
// Tasks on other nodes need the agents to serve their logs, which comes
// with multi-node clusters; they are skipped here.
func (s *Server) ServiceLogs(req *controlv1.ServiceLogsRequest, stream controlv1.Control_ServiceLogsServer) error {
	if s.hooks.TaskLogs == nil {
		return status.Error(codes.Unimplemented, "this manager cannot read logs")
	}
	var tasks []*typesv1.Task
	var err error
	s.store.View(func(tx store.ReadTx) {
		var svc *typesv1.Service
		if svc, err = findService(tx, req.GetRef()); err != nil {
			return
		}
		tasks, err = store.FindTasks(tx, store.ByServiceID(svc.GetId()))
	})
	if err != nil {
		return grpcError(err)
	}
	sort.Slice(tasks, func(i, j int) bool {
		if tasks[i].GetSlot() != tasks[j].GetSlot() {
			return tasks[i].GetSlot() < tasks[j].GetSlot()
		}
		return tasks[i].GetMeta().GetCreatedAt().AsTime().Before(tasks[j].GetMeta().GetCreatedAt().AsTime())
	})
	o := LogOptions{Follow: req.GetFollow(), Tail: int(req.GetTail())}
	if req.GetSinceUnixNano() > 0 {
		o.Since = time.Unix(0, req.GetSinceUnixNano())
	}
	ctx := stream.Context()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(tasks))
	for _, t := range tasks {
		if t.GetNodeId() != s.nodeID || t.GetStatus().GetState() < typesv1.TaskState_TASK_STATE_PREPARING {
			continue
		}
		t := proto.CloneOf(t)
		send := func(streamName string, line []byte, at time.Time) error {
			mu.Lock()
			defer mu.Unlock()
			return stream.Send(&controlv1.LogMessage{
				TaskId: t.GetId(), TaskName: store.TaskName(t), NodeId: t.GetNodeId(),
				Stream: streamName, Line: line, TimeUnixNano: at.UnixNano(),
			})
		}
		if !o.Follow {
			// Task by task, so the output is grouped like Docker's.
			if err := s.hooks.TaskLogs(ctx, t, o, send); err != nil && ctx.Err() == nil {
				return grpcError(err)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.hooks.TaskLogs(ctx, t, o, send); err != nil && ctx.Err() == nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return grpcError(err)
	default:
		return nil
	}
}
