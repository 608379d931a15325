package cli

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// fakeControl is an in-memory manager: enough of the control API for the
// CLI's commands, with hooks where a test needs behaviour over time.
type fakeControl struct {
	controlv1.UnimplementedControlServer

	mu         sync.Mutex
	info       *controlv1.InfoResponse
	tokens     *controlv1.GetJoinTokensResponse
	nodes      []*typesv1.Node
	services   []*typesv1.Service
	statuses   map[string]*controlv1.ServiceStatus
	tasks      []*typesv1.Task
	stacks     []*controlv1.StackSummary
	removeResp map[string][]string
	deployResp *controlv1.DeployStackResponse
	logs       []*controlv1.LogMessage

	// beforeListTasks runs (under mu) before each ListTasks: tests move
	// task states forward here.
	beforeListTasks func(f *fakeControl)

	deployed []*controlv1.DeployStackRequest
	updated  []*controlv1.UpdateNodeRequest
	scaled   []*controlv1.ScaleServiceRequest
	removed  []string
	left     []*controlv1.LeaveRequest
	rotated  []*controlv1.RotateJoinTokenRequest
	logReqs  []*controlv1.ServiceLogsRequest
}

func newFakeControl() *fakeControl {
	return &fakeControl{
		info:       &controlv1.InfoResponse{NodeId: "node1id", IsManager: true, RaftState: "Leader", Version: "0.1.0"},
		tokens:     &controlv1.GetJoinTokensResponse{Tokens: &typesv1.JoinTokens{Worker: "SHL-1-digest-worker", Manager: "SHL-1-digest-manager"}, Addr: "10.0.0.1:2377"},
		statuses:   map[string]*controlv1.ServiceStatus{},
		removeResp: map[string][]string{},
	}
}

func notFound(kind, ref string) error {
	return status.Errorf(codes.NotFound, "%s %s not found", kind, ref)
}

func (f *fakeControl) Info(context.Context, *controlv1.InfoRequest) (*controlv1.InfoResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.info, nil
}

func (f *fakeControl) Leave(_ context.Context, r *controlv1.LeaveRequest) (*controlv1.LeaveResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, r)
	return &controlv1.LeaveResponse{}, nil
}

func (f *fakeControl) GetJoinTokens(context.Context, *controlv1.GetJoinTokensRequest) (*controlv1.GetJoinTokensResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens, nil
}

func (f *fakeControl) RotateJoinToken(_ context.Context, r *controlv1.RotateJoinTokenRequest) (*controlv1.GetJoinTokensResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rotated = append(f.rotated, r)
	if r.Worker {
		f.tokens.Tokens.Worker += "-rotated"
	}
	if r.Manager {
		f.tokens.Tokens.Manager += "-rotated"
	}
	return f.tokens, nil
}

func (f *fakeControl) ListNodes(context.Context, *controlv1.ListNodesRequest) (*controlv1.ListNodesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &controlv1.ListNodesResponse{Nodes: f.nodes}, nil
}

func (f *fakeControl) findNode(ref string) *typesv1.Node {
	for _, n := range f.nodes {
		if n.Id == ref || n.GetDescription().GetHostname() == ref || (ref == "self" && n.Id == f.info.NodeId) {
			return n
		}
	}
	for _, n := range f.nodes {
		if strings.HasPrefix(n.Id, ref) {
			return n
		}
	}
	return nil
}

func (f *fakeControl) GetNode(_ context.Context, r *controlv1.GetNodeRequest) (*controlv1.GetNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.findNode(r.Ref)
	if n == nil {
		return nil, notFound("node", r.Ref)
	}
	return &controlv1.GetNodeResponse{Node: n}, nil
}

func (f *fakeControl) UpdateNode(_ context.Context, r *controlv1.UpdateNodeRequest) (*controlv1.GetNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.findNode(r.NodeId)
	if n == nil {
		return nil, notFound("node", r.NodeId)
	}
	if n.GetMeta().GetVersion() != r.Version {
		return nil, status.Error(codes.Aborted, "update out of sequence")
	}
	f.updated = append(f.updated, r)
	n.Spec = r.Spec
	return &controlv1.GetNodeResponse{Node: n}, nil
}

func (f *fakeControl) RemoveNode(_ context.Context, r *controlv1.RemoveNodeRequest) (*controlv1.RemoveNodeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.findNode(r.Ref) == nil {
		return nil, notFound("node", r.Ref)
	}
	f.removed = append(f.removed, "node:"+r.Ref)
	return &controlv1.RemoveNodeResponse{}, nil
}

func (f *fakeControl) findService(ref string) *typesv1.Service {
	for _, s := range f.services {
		if s.Id == ref || serviceName(s) == ref {
			return s
		}
	}
	for _, s := range f.services {
		if strings.HasPrefix(s.Id, ref) {
			return s
		}
	}
	return nil
}

func stackOf(s *typesv1.Service) string {
	return s.GetSpec().GetAnnotations().GetLabels()[stackLabel]
}

func (f *fakeControl) ListServices(_ context.Context, r *controlv1.ListServicesRequest) (*controlv1.ListServicesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &controlv1.ListServicesResponse{Statuses: map[string]*controlv1.ServiceStatus{}}
	for _, s := range f.services {
		if r.Stack != "" && stackOf(s) != r.Stack {
			continue
		}
		if len(r.Ids) > 0 && !contains(r.Ids, s.Id) {
			continue
		}
		resp.Services = append(resp.Services, s)
		if st := f.statuses[s.Id]; st != nil {
			resp.Statuses[s.Id] = st
		}
	}
	return resp, nil
}

func (f *fakeControl) GetService(_ context.Context, r *controlv1.GetServiceRequest) (*controlv1.GetServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.findService(r.Ref)
	if s == nil {
		return nil, notFound("service", r.Ref)
	}
	return &controlv1.GetServiceResponse{Service: s}, nil
}

func (f *fakeControl) ScaleService(_ context.Context, r *controlv1.ScaleServiceRequest) (*controlv1.GetServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.findService(r.Ref)
	if s == nil {
		return nil, notFound("service", r.Ref)
	}
	if s.GetSpec().GetGlobal() != nil {
		return nil, status.Error(codes.FailedPrecondition, "scale can only be used with replicated mode")
	}
	f.scaled = append(f.scaled, r)
	return &controlv1.GetServiceResponse{Service: s}, nil
}

func (f *fakeControl) RemoveService(_ context.Context, r *controlv1.RemoveServiceRequest) (*controlv1.RemoveServiceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.findService(r.Ref) == nil {
		return nil, notFound("service", r.Ref)
	}
	f.removed = append(f.removed, "service:"+r.Ref)
	return &controlv1.RemoveServiceResponse{}, nil
}

func (f *fakeControl) ListTasks(_ context.Context, r *controlv1.ListTasksRequest) (*controlv1.ListTasksResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.beforeListTasks != nil {
		f.beforeListTasks(f)
	}
	var out []*typesv1.Task
	for _, t := range f.tasks {
		if len(r.ServiceIds) > 0 && !contains(r.ServiceIds, t.ServiceId) {
			continue
		}
		if r.Stack != "" {
			s := f.findService(t.ServiceId)
			if s == nil || stackOf(s) != r.Stack {
				continue
			}
		}
		if len(r.DesiredStates) > 0 {
			ok := false
			for _, d := range r.DesiredStates {
				ok = ok || d == t.DesiredState
			}
			if !ok {
				continue
			}
		}
		if len(r.NodeIds) > 0 && !contains(r.NodeIds, t.NodeId) {
			continue
		}
		out = append(out, proto.Clone(t).(*typesv1.Task))
	}
	return &controlv1.ListTasksResponse{Tasks: out}, nil
}

func (f *fakeControl) DeployStack(_ context.Context, r *controlv1.DeployStackRequest) (*controlv1.DeployStackResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deployed = append(f.deployed, r)
	if f.deployResp == nil {
		return &controlv1.DeployStackResponse{}, nil
	}
	return f.deployResp, nil
}

func (f *fakeControl) RemoveStack(_ context.Context, r *controlv1.RemoveStackRequest) (*controlv1.RemoveStackResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	actions, ok := f.removeResp[r.Name]
	if !ok {
		return nil, notFound("stack", r.Name)
	}
	return &controlv1.RemoveStackResponse{Actions: actions}, nil
}

func (f *fakeControl) ListStacks(context.Context, *controlv1.ListStacksRequest) (*controlv1.ListStacksResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &controlv1.ListStacksResponse{Stacks: f.stacks}, nil
}

func (f *fakeControl) ServiceLogs(r *controlv1.ServiceLogsRequest, stream grpc.ServerStreamingServer[controlv1.LogMessage]) error {
	f.mu.Lock()
	s := f.findService(r.Ref)
	logs := f.logs
	f.logReqs = append(f.logReqs, r)
	f.mu.Unlock()
	if s == nil {
		return notFound("service", r.Ref)
	}
	for _, m := range logs {
		if err := stream.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// fakeClock is the injected clock: Sleep advances it, so poll loops with
// 30 s deadlines finish at once.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
	return nil
}

var epoch = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// harness runs CLI command lines against a fake manager on a unix socket.
type harness struct {
	t      *testing.T
	fake   *fakeControl
	sock   string
	dir    string
	clock  *fakeClock
	stdout bytes.Buffer
	stderr bytes.Buffer
	stdin  string
	env    map[string]string
	// configure adjusts the App of every run (fake loaders, starters).
	configure func(*App)
	server    *grpc.Server
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	// Short path: unix socket paths are limited to 107 bytes and
	// t.TempDir() names can be longer.
	dir, err := os.MkdirTemp("", "shl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &harness{
		t:     t,
		fake:  newFakeControl(),
		dir:   dir,
		sock:  filepath.Join(dir, "s.sock"),
		clock: &fakeClock{t: epoch},
		env:   map[string]string{},
	}
	h.env["SHOAL_HOST"] = "unix://" + h.sock
	return h
}

// serveAt starts the fake manager on sock.
func (h *harness) serveAt(sock string) {
	h.t.Helper()
	h.server = newServerFor(h.t, sock, h.fake)
}

// newServerFor serves a ControlServer on a unix socket until the test ends.
func newServerFor(t *testing.T, sock string, impl controlv1.ControlServer) *grpc.Server {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	controlv1.RegisterControlServer(srv, impl)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return srv
}

func (h *harness) serve() *harness {
	h.serveAt(h.sock)
	return h
}

// run executes one command line and returns its exit code; stdout and
// stderr hold what it printed.
func (h *harness) run(args ...string) int {
	h.t.Helper()
	h.stdout.Reset()
	h.stderr.Reset()
	app := &App{
		Stdin:  strings.NewReader(h.stdin),
		Stdout: &h.stdout,
		Stderr: &h.stderr,
		Getenv: func(k string) string { return h.env[k] },
		Environ: func() []string {
			var out []string
			for k, v := range h.env {
				out = append(out, k+"="+v)
			}
			return out
		},
		Now:   h.clock.Now,
		Sleep: h.clock.Sleep,
	}
	if h.configure != nil {
		h.configure(app)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return app.Run(ctx, args)
}

// mustRun fails the test unless the command succeeds.
func (h *harness) mustRun(args ...string) string {
	h.t.Helper()
	if code := h.run(args...); code != 0 {
		h.t.Fatalf("shoal %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, h.stdout.String(), h.stderr.String())
	}
	return h.stdout.String()
}

// ---------------------------------------------------------------- fixtures

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

func mkNode(id, host string, state typesv1.NodeState, avail typesv1.NodeAvailability, ms *typesv1.ManagerStatus) *typesv1.Node {
	return &typesv1.Node{
		Id:            id,
		Meta:          &typesv1.Meta{Version: 7, CreatedAt: ts(epoch.Add(-time.Hour))},
		Spec:          &typesv1.NodeSpec{Availability: avail, Annotations: &typesv1.Annotations{}},
		Description:   &typesv1.NodeDescription{Hostname: host, Version: "0.1.0", Os: "linux", Architecture: "x86_64"},
		Status:        &typesv1.NodeStatus{State: state, Addr: "10.0.0.1"},
		ManagerStatus: ms,
	}
}

func mkService(id, name, stack string, replicas uint64, image string, ports ...*typesv1.PortConfig) *typesv1.Service {
	labels := map[string]string{}
	if stack != "" {
		labels[stackLabel] = stack
	}
	s := &typesv1.Service{
		Id:   id,
		Meta: &typesv1.Meta{Version: 3},
		Spec: &typesv1.ServiceSpec{
			Annotations: &typesv1.Annotations{Name: name, Labels: labels},
			Task:        &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: image}},
			Mode:        &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: replicas}},
		},
	}
	if len(ports) > 0 {
		s.Endpoint = &typesv1.Endpoint{Ports: ports}
	}
	return s
}

func port(published, target uint32) *typesv1.PortConfig {
	return &typesv1.PortConfig{PublishedPort: published, TargetPort: target}
}

type taskOpt func(*typesv1.Task)

func mkTask(id string, svc *typesv1.Service, slot uint64, node string, state, desired typesv1.TaskState, age, created time.Duration, opts ...taskOpt) *typesv1.Task {
	t := &typesv1.Task{
		Id:                 id,
		Meta:               &typesv1.Meta{CreatedAt: ts(epoch.Add(-created))},
		ServiceId:          svc.Id,
		Slot:               slot,
		NodeId:             node,
		Spec:               proto.Clone(svc.Spec.Task).(*typesv1.TaskSpec),
		ServiceAnnotations: &typesv1.Annotations{Name: serviceName(svc)},
		Status:             &typesv1.TaskStatus{State: state, Timestamp: ts(epoch.Add(-age))},
		DesiredState:       desired,
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

func withErr(e string) taskOpt { return func(t *typesv1.Task) { t.Status.Err = e } }

const (
	running  = typesv1.TaskState_TASK_STATE_RUNNING
	shutdown = typesv1.TaskState_TASK_STATE_SHUTDOWN
	failed   = typesv1.TaskState_TASK_STATE_FAILED
)
