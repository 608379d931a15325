package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/agent/exec"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// fakeDispatcher is a manager's dispatcher in memory: it holds the node's
// tasks as the store would, sends them as assignments, takes status
// updates into them and records every call.
type fakeDispatcher struct {
	dispatcherv1.UnimplementedDispatcherServer

	mu          sync.Mutex
	tasks       map[string]*typesv1.Task
	order       []string // task IDs in assignment order
	session     string   // current session ID
	sessions    int
	drop        chan struct{} // closed to end the current session
	incremental chan *dispatcherv1.AssignmentsMessage
	statusCalls int
	updates     []*dispatcherv1.TaskStatusUpdate
	failStatus  int // UpdateTaskStatus calls still to fail
}

func newFakeDispatcher(tasks ...*typesv1.Task) *fakeDispatcher {
	d := &fakeDispatcher{tasks: map[string]*typesv1.Task{}}
	for _, t := range tasks {
		d.tasks[t.Id] = t
		d.order = append(d.order, t.Id)
	}
	return d
}

var _ dispatcherv1.DispatcherServer = (*fakeDispatcher)(nil)

func (d *fakeDispatcher) Session(req *dispatcherv1.SessionRequest, stream grpc.ServerStreamingServer[dispatcherv1.SessionMessage]) error {
	d.mu.Lock()
	d.sessions++
	d.session = fmt.Sprintf("session-%d", d.sessions)
	d.drop = make(chan struct{})
	d.incremental = make(chan *dispatcherv1.AssignmentsMessage, 16)
	sid, drop := d.session, d.drop
	d.mu.Unlock()
	if err := stream.Send(&dispatcherv1.SessionMessage{SessionId: sid, NodeId: req.NodeId, Managers: []string{"bufnet"}}); err != nil {
		return err
	}
	select {
	case <-drop:
		return status.Error(codes.Unavailable, "session dropped by the test")
	case <-stream.Context().Done():
		return nil
	}
}

func (d *fakeDispatcher) Heartbeat(_ context.Context, req *dispatcherv1.HeartbeatRequest) (*dispatcherv1.HeartbeatResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.SessionId != d.session {
		return nil, status.Error(codes.NotFound, "unknown session")
	}
	return &dispatcherv1.HeartbeatResponse{Period: durationpb.New(100 * time.Millisecond)}, nil
}

func (d *fakeDispatcher) Assignments(req *dispatcherv1.AssignmentsRequest, stream grpc.ServerStreamingServer[dispatcherv1.AssignmentsMessage]) error {
	d.mu.Lock()
	if req.SessionId != d.session {
		d.mu.Unlock()
		return status.Error(codes.NotFound, "unknown session")
	}
	drop, inc := d.drop, d.incremental
	full := &dispatcherv1.AssignmentsMessage{Type: dispatcherv1.AssignmentsMessage_TYPE_COMPLETE}
	for _, id := range d.order {
		if t, ok := d.tasks[id]; ok {
			full.Changes = append(full.Changes, &dispatcherv1.AssignmentChange{Item: &dispatcherv1.AssignmentChange_Task{Task: proto.Clone(t).(*typesv1.Task)}})
		}
	}
	d.mu.Unlock()
	if err := stream.Send(full); err != nil {
		return err
	}
	for {
		select {
		case m := <-inc:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-drop:
			return status.Error(codes.Unavailable, "session dropped by the test")
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (d *fakeDispatcher) UpdateTaskStatus(_ context.Context, req *dispatcherv1.UpdateTaskStatusRequest) (*dispatcherv1.UpdateTaskStatusResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if req.SessionId != d.session {
		return nil, status.Error(codes.NotFound, "unknown session")
	}
	if d.failStatus > 0 {
		d.failStatus--
		return nil, status.Error(codes.Unavailable, "store unavailable (test)")
	}
	d.statusCalls++
	for _, u := range req.Updates {
		d.updates = append(d.updates, u)
		if t, ok := d.tasks[u.TaskId]; ok {
			t.Status = u.Status
		}
	}
	return &dispatcherv1.UpdateTaskStatusResponse{}, nil
}

// push sends an incremental change to the current session and applies it
// to the fake's tasks, as the store would have.
func (d *fakeDispatcher) push(action dispatcherv1.AssignmentChange_Action, t *typesv1.Task) {
	d.mu.Lock()
	if action == dispatcherv1.AssignmentChange_ACTION_REMOVE {
		delete(d.tasks, t.Id)
	} else {
		if _, ok := d.tasks[t.Id]; !ok {
			d.order = append(d.order, t.Id)
		}
		d.tasks[t.Id] = t
	}
	inc := d.incremental
	d.mu.Unlock()
	inc <- &dispatcherv1.AssignmentsMessage{
		Type:    dispatcherv1.AssignmentsMessage_TYPE_INCREMENTAL,
		Changes: []*dispatcherv1.AssignmentChange{{Action: action, Item: &dispatcherv1.AssignmentChange_Task{Task: proto.Clone(t).(*typesv1.Task)}}},
	}
}

// setDesired changes a task's desired state and pushes it.
func (d *fakeDispatcher) setDesired(id string, s typesv1.TaskState) {
	d.mu.Lock()
	t := proto.Clone(d.tasks[id]).(*typesv1.Task)
	d.mu.Unlock()
	t.DesiredState = s
	d.push(dispatcherv1.AssignmentChange_ACTION_UPDATE, t)
}

func (d *fakeDispatcher) dropSession() {
	d.mu.Lock()
	defer d.mu.Unlock()
	close(d.drop)
}

func (d *fakeDispatcher) state(id string) *typesv1.TaskStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.tasks[id]; ok {
		return t.Status
	}
	return nil
}

// updatesOf returns the statuses received for the task, in order.
func (d *fakeDispatcher) updatesOf(id string) []*typesv1.TaskStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.updatesOfLocked(id)
}

func (d *fakeDispatcher) updatesOfLocked(id string) []*typesv1.TaskStatus {
	var out []*typesv1.TaskStatus
	for _, u := range d.updates {
		if u.TaskId == id {
			out = append(out, u.Status)
		}
	}
	return out
}

func (d *fakeDispatcher) counts() (sessions, statusCalls, updates int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sessions, d.statusCalls, len(d.updates)
}

// serve runs d on an in-memory listener and returns a Dial function for
// an agent's Config.
func serve(t *testing.T, d *fakeDispatcher) func(context.Context) (dispatcherv1.DispatcherClient, func() error, error) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	dispatcherv1.RegisterDispatcherServer(srv, d)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return func(ctx context.Context) (dispatcherv1.DispatcherClient, func() error, error) {
		conn, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return dispatcherv1.NewDispatcherClient(conn), conn.Close, nil
	}
}

// startAgent runs an agent against d, waits for its first session and
// returns a function that stops it (also called when the test ends).
func startAgent(t *testing.T, d *fakeDispatcher, e exec.Executor) (stop func()) {
	t.Helper()
	dial := serve(t, d)
	a := agent.New(agent.Config{
		Executor:            e,
		Dial:                dial,
		NodeID:              "node-1",
		Logger:              testLogger(t),
		StatusFlushInterval: 50 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-a.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("no session within 10s")
	}
	return stop
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until the dispatcher holds the task in state.
func waitState(t *testing.T, d *fakeDispatcher, id string, state typesv1.TaskState) *typesv1.TaskStatus {
	t.Helper()
	var last *typesv1.TaskStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		last = d.state(id)
		if last.GetState() == state {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: state %v (%q, err %q), want %v", id, last.GetState(), last.GetMessage(), last.GetErr(), state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newTask is a fixture: an assigned task of service web, slot n.
func newTask(id string, slot uint64) *typesv1.Task {
	return &typesv1.Task{
		Id:                 id,
		ServiceId:          "svc-web",
		NodeId:             "node-1",
		Slot:               slot,
		Annotations:        &typesv1.Annotations{Name: fmt.Sprintf("getstartedlab_web.%d", slot)},
		ServiceAnnotations: &typesv1.Annotations{Name: "getstartedlab_web", Labels: map[string]string{exec.LabelStackNamespace: "getstartedlab"}},
		DesiredState:       typesv1.TaskState_TASK_STATE_RUNNING,
		Status:             &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_ASSIGNED, Message: "scheduler assigned task to node"},
		Spec:               &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: "helper:latest"}},
	}
}
