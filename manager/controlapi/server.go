// Package controlapi serves the control API (proto/control/v1) over the
// store: reads from a local view, writes as store batches through a
// Proposer. Errors are store/sentinel classes inside and become gRPC codes
// only here, at the edge.
package controlapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/store"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// StackLabel marks every object of a stack with the stack's name.
const StackLabel = "com.docker.stack.namespace"

// Hooks are what the daemon around the API provides.
type Hooks struct {
	// Info fills the parts of InfoResponse the store does not know.
	Info func(*controlv1.InfoResponse)
	// Leave makes this node leave the swarm, after the reply is sent.
	Leave func(force bool) error
	// JoinAddr is the address joining nodes should dial.
	JoinAddr func() string
	// TaskLogs reads a task's log on this node.
	TaskLogs TaskLogsFunc
	// NewToken makes a join token (for rotation).
	NewToken func() string
	// PortFree, when set, says whether a port that no service publishes
	// yet can be published on this node: an error (naming the port) when
	// another program listens on it. Deploys that would publish it fail.
	PortFree func(port uint32, proto string) error
	// ManagerStatus, when set, fills a manager node's live Raft status
	// (leader, reachability) on the copy a reader gets.
	ManagerStatus func(n *typesv1.Node)
}

// Server implements controlv1.ControlServer.
type Server struct {
	controlv1.UnimplementedControlServer
	store  *store.Store
	prop   store.Proposer
	nodeID string
	hooks  Hooks
}

var _ controlv1.ControlServer = (*Server)(nil)

// New returns a control API server for the node nodeID.
func New(s *store.Store, p store.Proposer, nodeID string, h Hooks) *Server {
	return &Server{store: s, prop: p, nodeID: nodeID, hooks: h}
}

// grpcError maps the store's error classes to gRPC codes.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, store.ErrNotExist):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrExist), errors.Is(err, store.ErrNameConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrSequenceConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, store.ErrInvalid), errors.Is(err, errInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, errNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

var (
	errInvalid  = errors.New("invalid argument")
	errNotFound = errors.New("not found")
)

func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errInvalid}, a...)...)
}

func notFoundf(format string, a ...any) error {
	return &classError{kind: errNotFound, msg: fmt.Sprintf(format, a...)}
}

type classError struct {
	kind error
	msg  string
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.kind }

// retry runs a read-modify-write until it commits without a version
// conflict (another writer got there first) or fails otherwise.
func (s *Server) retry(ctx context.Context, build func(tx store.ReadTx, b *store.Batch) error) error {
	for attempt := 0; ; attempt++ {
		b := s.store.NewBatch()
		var err error
		s.store.View(func(tx store.ReadTx) { err = build(tx, b) })
		if err != nil {
			return err
		}
		if b.Len() == 0 {
			return nil
		}
		_, err = s.prop.Propose(ctx, b.Proto())
		if err == nil || !errors.Is(err, store.ErrSequenceConflict) || attempt >= 5 {
			return err
		}
	}
}

// Info describes the swarm as this node sees it.
func (s *Server) Info(ctx context.Context, _ *controlv1.InfoRequest) (*controlv1.InfoResponse, error) {
	resp := &controlv1.InfoResponse{NodeId: s.nodeID, IsManager: true}
	s.store.View(func(tx store.ReadTx) {
		if cs, _ := store.FindClusters(tx, store.All); len(cs) > 0 {
			resp.ClusterId = cs[0].GetId()
		}
		nodes, _ := store.FindNodes(tx, store.All)
		resp.Nodes = int64(len(nodes))
		for _, n := range nodes {
			if n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER {
				resp.Managers++
			}
		}
	})
	if s.hooks.Info != nil {
		s.hooks.Info(resp)
	}
	return resp, nil
}

// Leave asks the daemon to leave the swarm.
func (s *Server) Leave(ctx context.Context, req *controlv1.LeaveRequest) (*controlv1.LeaveResponse, error) {
	if s.hooks.Leave == nil {
		return nil, status.Error(codes.Unimplemented, "this manager cannot leave")
	}
	if err := s.hooks.Leave(req.GetForce()); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &controlv1.LeaveResponse{}, nil
}

func (s *Server) cluster() (*typesv1.Cluster, error) {
	var c *typesv1.Cluster
	s.store.View(func(tx store.ReadTx) {
		if cs, _ := store.FindClusters(tx, store.All); len(cs) > 0 {
			c = cs[0]
		}
	})
	if c == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node is not part of a swarm")
	}
	return c, nil
}

// GetJoinTokens returns the cluster's join tokens.
func (s *Server) GetJoinTokens(ctx context.Context, _ *controlv1.GetJoinTokensRequest) (*controlv1.GetJoinTokensResponse, error) {
	c, err := s.cluster()
	if err != nil {
		return nil, err
	}
	resp := &controlv1.GetJoinTokensResponse{Tokens: c.GetJoinTokens()}
	if s.hooks.JoinAddr != nil {
		resp.Addr = s.hooks.JoinAddr()
	}
	return resp, nil
}

// RotateJoinToken replaces the worker and/or manager join token; the old
// one stops working at once.
func (s *Server) RotateJoinToken(ctx context.Context, req *controlv1.RotateJoinTokenRequest) (*controlv1.GetJoinTokensResponse, error) {
	if s.hooks.NewToken == nil {
		return nil, status.Error(codes.Unimplemented, "this manager cannot rotate tokens")
	}
	if !req.GetWorker() && !req.GetManager() {
		return nil, grpcError(invalidf("rotate: say which token, worker or manager"))
	}
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		cs, _ := store.FindClusters(tx, store.All)
		if len(cs) == 0 {
			return status.Error(codes.FailedPrecondition, "this node is not part of a swarm")
		}
		c := cs[0]
		if c.JoinTokens == nil {
			c.JoinTokens = &typesv1.JoinTokens{}
		}
		if req.GetWorker() {
			c.JoinTokens.Worker = s.hooks.NewToken()
		}
		if req.GetManager() {
			c.JoinTokens.Manager = s.hooks.NewToken()
		}
		b.UpdateCluster(c)
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return s.GetJoinTokens(ctx, &controlv1.GetJoinTokensRequest{})
}

// ---------------------------------------------------------------- nodes

// ListNodes lists nodes, filtered.
func (s *Server) ListNodes(ctx context.Context, req *controlv1.ListNodesRequest) (*controlv1.ListNodesResponse, error) {
	var nodes []*typesv1.Node
	var err error
	s.store.View(func(tx store.ReadTx) { nodes, err = store.FindNodes(tx, store.All) })
	if err != nil {
		return nil, grpcError(err)
	}
	out := nodes[:0]
	for _, n := range nodes {
		if len(req.GetIds()) > 0 && !matchPrefix(n.GetId(), req.GetIds()) {
			continue
		}
		if len(req.GetNames()) > 0 && !contains(req.GetNames(), n.GetDescription().GetHostname()) {
			continue
		}
		if len(req.GetRoles()) > 0 {
			ok := false
			for _, r := range req.GetRoles() {
				ok = ok || r == n.GetRole()
			}
			if !ok {
				continue
			}
		}
		out = append(out, s.live(n))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].GetDescription().GetHostname()+out[i].GetId() < out[j].GetDescription().GetHostname()+out[j].GetId()
	})
	return &controlv1.ListNodesResponse{Nodes: out}, nil
}

func (s *Server) findNode(tx store.ReadTx, ref string) (*typesv1.Node, error) {
	if ref == "self" {
		ref = s.nodeID
	}
	if n := store.GetNode(tx, ref); n != nil {
		return n, nil
	}
	nodes, _ := store.FindNodes(tx, store.All)
	var hit []*typesv1.Node
	for _, n := range nodes {
		if n.GetDescription().GetHostname() == ref || n.GetSpec().GetAnnotations().GetName() == ref {
			return n, nil
		}
		if strings.HasPrefix(n.GetId(), ref) {
			hit = append(hit, n)
		}
	}
	switch len(hit) {
	case 1:
		return hit[0], nil
	case 0:
		return nil, notFoundf("node %s not found", ref)
	}
	return nil, invalidf("node %s is ambiguous (%d matches found)", ref, len(hit))
}

// GetNode finds a node by id, id prefix or hostname.
func (s *Server) GetNode(ctx context.Context, req *controlv1.GetNodeRequest) (*controlv1.GetNodeResponse, error) {
	var n *typesv1.Node
	var err error
	s.store.View(func(tx store.ReadTx) { n, err = s.findNode(tx, req.GetRef()) })
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.GetNodeResponse{Node: s.live(n)}, nil
}

// live is n with its Raft status as this manager sees it now.
func (s *Server) live(n *typesv1.Node) *typesv1.Node {
	if s.hooks.ManagerStatus == nil || n.GetRole() != typesv1.NodeRole_NODE_ROLE_MANAGER {
		return n
	}
	n = proto.CloneOf(n)
	s.hooks.ManagerStatus(n)
	return n
}

// UpdateNode replaces a node's spec (availability, labels, role).
func (s *Server) UpdateNode(ctx context.Context, req *controlv1.UpdateNodeRequest) (*controlv1.GetNodeResponse, error) {
	if req.GetSpec() == nil {
		return nil, grpcError(invalidf("no node spec"))
	}
	var out *typesv1.Node
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		n, err := s.findNode(tx, req.GetNodeId())
		if err != nil {
			return err
		}
		if req.GetVersion() != 0 && n.GetMeta().GetVersion() != req.GetVersion() {
			return fmt.Errorf("%w: node %s was changed meanwhile (version %d, not %d)", store.ErrSequenceConflict, n.GetId(), n.GetMeta().GetVersion(), req.GetVersion())
		}
		if n.GetSpec().GetDesiredRole() == typesv1.NodeRole_NODE_ROLE_MANAGER && req.GetSpec().GetDesiredRole() == typesv1.NodeRole_NODE_ROLE_WORKER {
			nodes, _ := store.FindNodes(tx, store.All)
			managers := 0
			for _, o := range nodes {
				if o.GetSpec().GetDesiredRole() == typesv1.NodeRole_NODE_ROLE_MANAGER {
					managers++
				}
			}
			if managers <= 1 {
				return status.Error(codes.FailedPrecondition, "attempting to demote the last manager of the swarm")
			}
		}
		n.Spec = proto.CloneOf(req.GetSpec())
		out = n
		b.UpdateNode(n)
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.GetNodeResponse{Node: out}, nil
}

// ---------------------------------------------------------------- services

// ListServices lists services with their running/desired task counts.
func (s *Server) ListServices(ctx context.Context, req *controlv1.ListServicesRequest) (*controlv1.ListServicesResponse, error) {
	resp := &controlv1.ListServicesResponse{Statuses: map[string]*controlv1.ServiceStatus{}}
	var err error
	s.store.View(func(tx store.ReadTx) {
		var svcs []*typesv1.Service
		if req.GetStack() != "" {
			svcs, err = store.FindServices(tx, store.ByStack(req.GetStack()))
		} else {
			svcs, err = store.FindServices(tx, store.All)
		}
		if err != nil {
			return
		}
		nodes, _ := store.FindNodes(tx, store.All)
		for _, svc := range svcs {
			if len(req.GetIds()) > 0 && !matchPrefix(svc.GetId(), req.GetIds()) {
				continue
			}
			if len(req.GetNames()) > 0 && !contains(req.GetNames(), svc.GetSpec().GetAnnotations().GetName()) {
				continue
			}
			resp.Services = append(resp.Services, svc)
			tasks, _ := store.FindTasks(tx, store.ByServiceID(svc.GetId()))
			st := &controlv1.ServiceStatus{}
			for _, t := range tasks {
				if t.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING && t.GetStatus().GetState() == typesv1.TaskState_TASK_STATE_RUNNING {
					st.RunningTasks++
				}
			}
			if r := svc.GetSpec().GetReplicated(); r != nil {
				st.DesiredTasks = r.GetReplicas()
			} else {
				for _, t := range tasks {
					if t.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING {
						st.DesiredTasks++
					}
				}
				_ = nodes
			}
			resp.Statuses[svc.GetId()] = st
		}
	})
	if err != nil {
		return nil, grpcError(err)
	}
	sort.Slice(resp.Services, func(i, j int) bool {
		return resp.Services[i].GetSpec().GetAnnotations().GetName() < resp.Services[j].GetSpec().GetAnnotations().GetName()
	})
	return resp, nil
}

func findService(tx store.ReadTx, ref string) (*typesv1.Service, error) {
	if svc := store.GetService(tx, ref); svc != nil {
		return svc, nil
	}
	if svcs, _ := store.FindServices(tx, store.ByName(ref)); len(svcs) == 1 {
		return svcs[0], nil
	}
	svcs, _ := store.FindServices(tx, store.ByIDPrefix(ref))
	switch len(svcs) {
	case 1:
		return svcs[0], nil
	case 0:
		return nil, notFoundf("no such service: %s", ref)
	}
	return nil, invalidf("service %s is ambiguous (%d services found)", ref, len(svcs))
}

// GetService finds a service by id, id prefix or name.
func (s *Server) GetService(ctx context.Context, req *controlv1.GetServiceRequest) (*controlv1.GetServiceResponse, error) {
	var svc *typesv1.Service
	var err error
	s.store.View(func(tx store.ReadTx) { svc, err = findService(tx, req.GetRef()) })
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.GetServiceResponse{Service: svc}, nil
}

// UpdateService replaces a service's spec.
func (s *Server) UpdateService(ctx context.Context, req *controlv1.UpdateServiceRequest) (*controlv1.GetServiceResponse, error) {
	if req.GetSpec() == nil {
		return nil, grpcError(invalidf("no service spec"))
	}
	var out *typesv1.Service
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		svc, err := findService(tx, req.GetServiceId())
		if err != nil {
			return err
		}
		if req.GetVersion() != 0 && svc.GetMeta().GetVersion() != req.GetVersion() {
			return fmt.Errorf("%w: service %s was changed meanwhile (version %d, not %d)", store.ErrSequenceConflict, svc.GetSpec().GetAnnotations().GetName(), svc.GetMeta().GetVersion(), req.GetVersion())
		}
		if err := s.checkPorts(tx, svc, req.GetSpec()); err != nil {
			return err
		}
		out = updateServiceSpec(b, svc, req.GetSpec())
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.GetServiceResponse{Service: out}, nil
}

// updateServiceSpec records a new spec (keeping the old one for rollback);
// nothing is written when the spec did not change, so that deploying the
// same stack twice restarts nothing.
func updateServiceSpec(b *store.Batch, svc *typesv1.Service, spec *typesv1.ServiceSpec) *typesv1.Service {
	if proto.Equal(svc.GetSpec(), spec) {
		return svc
	}
	svc.PreviousSpec = svc.GetSpec()
	svc.Spec = proto.CloneOf(spec)
	svc.SpecVersion++
	// The endpoint (VIPs, allocated ports) stays: the allocator reconciles
	// it with the new spec and keeps what still fits.
	b.UpdateService(svc)
	return svc
}

// ScaleService sets a replicated service's replica count.
func (s *Server) ScaleService(ctx context.Context, req *controlv1.ScaleServiceRequest) (*controlv1.GetServiceResponse, error) {
	var out *typesv1.Service
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		svc, err := findService(tx, req.GetRef())
		if err != nil {
			return err
		}
		if svc.GetSpec().GetReplicated() == nil {
			return invalidf("scale can only be used with replicated mode")
		}
		spec := proto.CloneOf(svc.GetSpec())
		spec.Mode = &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: req.GetReplicas()}}
		out = updateServiceSpec(b, svc, spec)
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.GetServiceResponse{Service: out}, nil
}

// RemoveService deletes a service; the orchestrator shuts its tasks down.
func (s *Server) RemoveService(ctx context.Context, req *controlv1.RemoveServiceRequest) (*controlv1.RemoveServiceResponse, error) {
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		svc, err := findService(tx, req.GetRef())
		if err != nil {
			return err
		}
		b.DeleteService(svc)
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.RemoveServiceResponse{}, nil
}

// ---------------------------------------------------------------- tasks

// ListTasks lists tasks, filtered.
func (s *Server) ListTasks(ctx context.Context, req *controlv1.ListTasksRequest) (*controlv1.ListTasksResponse, error) {
	var out []*typesv1.Task
	var err error
	s.store.View(func(tx store.ReadTx) {
		var tasks []*typesv1.Task
		switch {
		case len(req.GetServiceIds()) > 0:
			for _, id := range req.GetServiceIds() {
				ts, e := store.FindTasks(tx, store.ByServiceID(id))
				if e != nil {
					err = e
					return
				}
				tasks = append(tasks, ts...)
			}
		case req.GetStack() != "":
			tasks, err = store.FindTasks(tx, store.ByStack(req.GetStack()))
		default:
			tasks, err = store.FindTasks(tx, store.All)
		}
		for _, t := range tasks {
			if len(req.GetNodeIds()) > 0 && !contains(req.GetNodeIds(), t.GetNodeId()) {
				continue
			}
			if len(req.GetIds()) > 0 && !matchPrefix(t.GetId(), req.GetIds()) {
				continue
			}
			if len(req.GetNames()) > 0 && !contains(req.GetNames(), store.TaskName(t)) {
				continue
			}
			if len(req.GetDesiredStates()) > 0 {
				ok := false
				for _, d := range req.GetDesiredStates() {
					ok = ok || d == t.GetDesiredState()
				}
				if !ok {
					continue
				}
			}
			out = append(out, t)
		}
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.ListTasksResponse{Tasks: out}, nil
}

// GetTask finds a task by id or id prefix.
func (s *Server) GetTask(ctx context.Context, req *controlv1.GetTaskRequest) (*controlv1.GetTaskResponse, error) {
	var t *typesv1.Task
	var err error
	s.store.View(func(tx store.ReadTx) {
		if t = store.GetTask(tx, req.GetRef()); t != nil {
			return
		}
		ts, _ := store.FindTasks(tx, store.ByIDPrefix(req.GetRef()))
		switch len(ts) {
		case 1:
			t = ts[0]
		case 0:
			err = notFoundf("no such task: %s", req.GetRef())
		default:
			err = invalidf("task %s is ambiguous (%d tasks found)", req.GetRef(), len(ts))
		}
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.GetTaskResponse{Task: t}, nil
}

// ListNetworks lists networks, optionally of one stack.
func (s *Server) ListNetworks(ctx context.Context, req *controlv1.ListNetworksRequest) (*controlv1.ListNetworksResponse, error) {
	var out []*typesv1.Network
	var err error
	s.store.View(func(tx store.ReadTx) {
		if req.GetStack() != "" {
			out, err = store.FindNetworks(tx, store.ByStack(req.GetStack()))
		} else {
			out, err = store.FindNetworks(tx, store.All)
		}
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.ListNetworksResponse{Networks: out}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func matchPrefix(id string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// RemoveNode deletes a node from the swarm, as `docker node rm`: a node
// that is not Down needs force, and a manager must be demoted first. Its
// certificate is refused from then on and its tasks are replaced.
func (s *Server) RemoveNode(ctx context.Context, req *controlv1.RemoveNodeRequest) (*controlv1.RemoveNodeResponse, error) {
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		n, err := s.findNode(tx, req.GetRef())
		if err != nil {
			return err
		}
		if n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER {
			return status.Errorf(codes.FailedPrecondition, "node %s is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal", n.GetId())
		}
		if n.GetStatus().GetState() != typesv1.NodeState_NODE_STATE_DOWN && !req.GetForce() {
			return status.Errorf(codes.FailedPrecondition, "node %s is not down and can't be removed", n.GetId())
		}
		b.DeleteNode(n)
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &controlv1.RemoveNodeResponse{}, nil
}
