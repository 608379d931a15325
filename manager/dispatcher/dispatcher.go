// Package dispatcher serves the agents (proto/dispatcher/v1): node sessions
// and heartbeats, the stream of tasks assigned to each node, and task
// status reports, which it batches into few store writes.
package dispatcher

import (
	"context"
	"errors"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/manager/store"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Config tunes a Dispatcher.
type Config struct {
	// HeartbeatPeriod is how often agents heartbeat (default 1 s); a node
	// that misses DownAfter periods (default 3) is marked Down, so a dead
	// node is noticed within about 3 s (Docker: 15 s or more).
	HeartbeatPeriod time.Duration
	DownAfter       int
	// FlushInterval batches status updates from all agents into one write
	// (default 10 ms).
	FlushInterval time.Duration
	Logger        *slog.Logger
	// IsLeader, when set, limits sessions to the leader: every node's
	// liveness is then known in one place, and a follower's agent is told
	// to go to the leader.
	IsLeader func() bool
}

// Dispatcher implements dispatcherv1.DispatcherServer.
type Dispatcher struct {
	dispatcherv1.UnimplementedDispatcherServer
	cfg   Config
	store *store.Store
	prop  store.Proposer
	log   *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // by session id
	byNode   map[string]*session

	updates chan statusUpdate
	// expect holds nodes that were Ready when this dispatcher started
	// leading, with the time by which they must open a session here or be
	// marked Down: a node that died with the old leader has no session
	// to expire.
	expect map[string]time.Time
}

var _ dispatcherv1.DispatcherServer = (*Dispatcher)(nil)

type session struct {
	id       string
	nodeID   string
	deadline time.Time
	done     chan struct{}
}

type statusUpdate struct {
	nodeID string
	taskID string
	status *typesv1.TaskStatus
}

// New returns a Dispatcher; Run must be running for it to work.
func New(s *store.Store, p store.Proposer, cfg Config) *Dispatcher {
	if cfg.HeartbeatPeriod == 0 {
		cfg.HeartbeatPeriod = time.Second
	}
	if cfg.DownAfter == 0 {
		cfg.DownAfter = 3
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Dispatcher{
		cfg: cfg, store: s, prop: p,
		log:      cfg.Logger.With("component", "dispatcher"),
		sessions: map[string]*session{},
		byNode:   map[string]*session{},
		updates:  make(chan statusUpdate, 4096),
	}
}

// Run writes batched status updates and marks nodes whose heartbeats
// stopped as Down, until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	d.expectReadyNodes()
	tick := time.NewTicker(d.cfg.HeartbeatPeriod / 2)
	defer tick.Stop()
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	pending := map[string]statusUpdate{}
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-d.updates:
			if len(pending) == 0 {
				flush.Reset(d.cfg.FlushInterval)
			}
			// The latest report of a task wins.
			pending[u.taskID] = u
		case <-flush.C:
			d.writeStatuses(ctx, pending)
			pending = map[string]statusUpdate{}
		case <-tick.C:
			d.expireSessions(ctx)
		}
	}
}

// writeStatuses applies reports in one batch. A task's state only moves
// forward; a report about a task the node does not own is ignored.
func (d *Dispatcher) writeStatuses(ctx context.Context, pending map[string]statusUpdate) {
	for attempt := 0; attempt < 5 && len(pending) > 0; attempt++ {
		b := d.store.NewBatch()
		d.store.View(func(tx store.ReadTx) {
			for _, u := range pending {
				t := store.GetTask(tx, u.taskID)
				if t == nil || t.GetNodeId() != u.nodeID {
					continue
				}
				if u.status.GetState() < t.GetStatus().GetState() {
					continue
				}
				if proto.Equal(t.GetStatus(), u.status) {
					continue
				}
				t.Status = u.status
				b.UpdateTask(t)
			}
		})
		if b.Len() == 0 {
			return
		}
		_, err := d.prop.Propose(ctx, b.Proto())
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrSequenceConflict) {
			d.log.Warn("write task statuses", "err", err)
			return
		}
	}
	if len(pending) > 0 {
		// The agents report again on their next change or session; say
		// that these were dropped rather than lose them silently.
		d.log.Warn("task statuses dropped after repeated write conflicts", "updates", len(pending))
	}
}

// expectReadyNodes gives every node the store says is Ready two grace
// periods to open a session with this dispatcher: its agent first has to
// notice the old leader is gone and find this one.
func (d *Dispatcher) expectReadyNodes() {
	var nodes []*typesv1.Node
	d.store.View(func(tx store.ReadTx) { nodes, _ = store.FindNodes(tx, store.All) })
	deadline := time.Now().Add(2 * d.grace())
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expect = map[string]time.Time{}
	for _, n := range nodes {
		if n.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY && d.byNode[n.GetId()] == nil {
			d.expect[n.GetId()] = deadline
		}
	}
}

// errNodeRemoved refuses a session to a node the swarm no longer has.
var errNodeRemoved = errors.New("this node is not part of the swarm (it was removed): leave and join again")

func (d *Dispatcher) expireSessions(ctx context.Context) {
	now := time.Now()
	var dead []string
	known := map[string]bool{}
	d.store.View(func(tx store.ReadTx) {
		nodes, _ := store.FindNodes(tx, store.All)
		for _, n := range nodes {
			known[n.GetId()] = true
		}
	})
	d.mu.Lock()
	// Sessions of removed nodes end now; their certificates are refused
	// from then on.
	for id, s := range d.sessions {
		if !known[s.nodeID] {
			delete(d.sessions, id)
			if d.byNode[s.nodeID] == s {
				delete(d.byNode, s.nodeID)
			}
			close(s.done)
		}
	}
	for id, deadline := range d.expect {
		if d.byNode[id] != nil {
			delete(d.expect, id)
		} else if now.After(deadline) {
			delete(d.expect, id)
			dead = append(dead, id)
		}
	}
	for id, s := range d.sessions {
		if now.After(s.deadline) {
			delete(d.sessions, id)
			if d.byNode[s.nodeID] == s {
				delete(d.byNode, s.nodeID)
				dead = append(dead, s.nodeID)
			}
			close(s.done)
		}
	}
	d.mu.Unlock()
	for _, n := range dead {
		d.log.Info("node missed its heartbeats", "node.id", n)
		d.setNodeState(ctx, n, typesv1.NodeState_NODE_STATE_DOWN, "heartbeat failure")
	}
}

func (d *Dispatcher) setNodeState(ctx context.Context, nodeID string, st typesv1.NodeState, msg string) {
	for attempt := 0; attempt < 5; attempt++ {
		b := d.store.NewBatch()
		d.store.View(func(tx store.ReadTx) {
			n := store.GetNode(tx, nodeID)
			if n == nil || (n.GetStatus().GetState() == st && n.GetStatus().GetMessage() == msg) {
				return
			}
			if n.Status == nil {
				n.Status = &typesv1.NodeStatus{}
			}
			n.Status.State, n.Status.Message = st, msg
			b.UpdateNode(n)
		})
		if b.Len() == 0 {
			return
		}
		if _, err := d.prop.Propose(ctx, b.Proto()); err == nil || !errors.Is(err, store.ErrSequenceConflict) {
			if err != nil {
				d.log.Warn("set node state", "node.id", nodeID, "err", err)
			}
			return
		}
	}
}

// registerNode creates the node if it is new and marks it Ready.
func (d *Dispatcher) registerNode(ctx context.Context, req *dispatcherv1.SessionRequest) error {
	for attempt := 0; attempt < 5; attempt++ {
		b := d.store.NewBatch()
		gone := false
		d.store.View(func(tx store.ReadTx) {
			n := store.GetNode(tx, req.GetNodeId())
			if n == nil {
				// Nodes are made by init and join; one that is missing
				// was removed (`node rm`) and may not come back.
				gone = true
				return
			}
			want := &typesv1.NodeStatus{State: typesv1.NodeState_NODE_STATE_READY, Addr: req.GetAddr()}
			if proto.Equal(n.GetStatus(), want) && proto.Equal(n.GetDescription(), req.GetDescription()) {
				return
			}
			n.Status = want
			n.Description = req.GetDescription()
			b.UpdateNode(n)
		})
		if gone {
			return errNodeRemoved
		}
		if b.Len() == 0 {
			return nil
		}
		_, err := d.prop.Propose(ctx, b.Proto())
		if err == nil || !errors.Is(err, store.ErrSequenceConflict) {
			return err
		}
	}
	return errors.New("register node: too many conflicting writes")
}

// Session registers a node and keeps its session open.
func (d *Dispatcher) Session(req *dispatcherv1.SessionRequest, stream dispatcherv1.Dispatcher_SessionServer) error {
	ctx := stream.Context()
	// Over TCP the node is who its certificate says; the request's id is
	// only taken from the manager's own embedded agent.
	if nc, ok := PeerNode(ctx); ok {
		req.NodeId = nc.NodeID
	} else if isRemote(ctx) {
		return status.Error(codes.Unauthenticated, "session: no node certificate")
	}
	if req.GetNodeId() == "" {
		return status.Error(codes.InvalidArgument, "session: no node id")
	}
	if d.cfg.IsLeader != nil && !d.cfg.IsLeader() {
		return status.Error(codes.FailedPrecondition, "this manager is not the leader")
	}
	if err := d.registerNode(ctx, req); err != nil {
		if errors.Is(err, errNodeRemoved) {
			return status.Errorf(codes.PermissionDenied, "node %s: %v", req.GetNodeId(), err)
		}
		return status.Errorf(codes.Unavailable, "register node: %v", err)
	}
	s := &session{id: identity.NewID(), nodeID: req.GetNodeId(), deadline: time.Now().Add(d.grace()), done: make(chan struct{})}
	d.mu.Lock()
	if old := d.byNode[s.nodeID]; old != nil {
		// A node has one session: a reconnecting agent replaces its old one.
		delete(d.sessions, old.id)
		close(old.done)
	}
	d.sessions[s.id] = s
	d.byNode[s.nodeID] = s
	d.mu.Unlock()
	d.log.Info("node session started", "node.id", s.nodeID)
	if err := stream.Send(&dispatcherv1.SessionMessage{SessionId: s.id, NodeId: s.nodeID}); err != nil {
		return err
	}
	// A dispatcher that stops leading ends its sessions, so that their
	// agents go to the new leader.
	tick := time.NewTicker(d.cfg.HeartbeatPeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		case <-tick.C:
			if d.cfg.IsLeader != nil && !d.cfg.IsLeader() {
				d.mu.Lock()
				if d.sessions[s.id] == s {
					delete(d.sessions, s.id)
					if d.byNode[s.nodeID] == s {
						delete(d.byNode, s.nodeID)
					}
				}
				d.mu.Unlock()
				return status.Error(codes.FailedPrecondition, "this manager is no longer the leader")
			}
		}
	}
}

func (d *Dispatcher) grace() time.Duration {
	return d.cfg.HeartbeatPeriod * time.Duration(d.cfg.DownAfter)
}

func (d *Dispatcher) session(id string) (*session, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[id]
	if !ok {
		return nil, status.Error(codes.NotFound, "session not found or expired; start a new one")
	}
	return s, nil
}

// Heartbeat extends a session.
func (d *Dispatcher) Heartbeat(ctx context.Context, req *dispatcherv1.HeartbeatRequest) (*dispatcherv1.HeartbeatResponse, error) {
	d.mu.Lock()
	s, ok := d.sessions[req.GetSessionId()]
	if ok {
		s.deadline = time.Now().Add(d.grace())
	}
	d.mu.Unlock()
	if !ok {
		return nil, status.Error(codes.NotFound, "session not found or expired; start a new one")
	}
	return &dispatcherv1.HeartbeatResponse{Period: durationpb.New(d.cfg.HeartbeatPeriod)}, nil
}

// UpdateTaskStatus queues reports for the next batched write.
func (d *Dispatcher) UpdateTaskStatus(ctx context.Context, req *dispatcherv1.UpdateTaskStatusRequest) (*dispatcherv1.UpdateTaskStatusResponse, error) {
	s, err := d.session(req.GetSessionId())
	if err != nil {
		return nil, err
	}
	for _, u := range req.GetUpdates() {
		select {
		case d.updates <- statusUpdate{nodeID: s.nodeID, taskID: u.GetTaskId(), status: u.GetStatus()}:
		case <-ctx.Done():
			return nil, status.Error(codes.Canceled, "canceled")
		}
	}
	return &dispatcherv1.UpdateTaskStatusResponse{}, nil
}

// assigned says whether a node should know of a task: it was placed there
// and not yet removed.
func assigned(t *typesv1.Task, nodeID string) bool {
	return t.GetNodeId() == nodeID && t.GetStatus().GetState() >= typesv1.TaskState_TASK_STATE_ASSIGNED
}

// Assignments streams the node's tasks: the full set, then changes.
func (d *Dispatcher) Assignments(req *dispatcherv1.AssignmentsRequest, stream dispatcherv1.Dispatcher_AssignmentsServer) error {
	s, err := d.session(req.GetSessionId())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	known := map[string]bool{}
	full := &dispatcherv1.AssignmentsMessage{Type: dispatcherv1.AssignmentsMessage_TYPE_COMPLETE}
	events := d.store.ViewAndWatch(ctx, func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByNodeID(s.nodeID))
		for _, t := range tasks {
			if assigned(t, s.nodeID) {
				known[t.GetId()] = true
				full.Changes = append(full.Changes, &dispatcherv1.AssignmentChange{Item: &dispatcherv1.AssignmentChange_Task{Task: t}})
			}
		}
	})
	if err := stream.Send(full); err != nil {
		return err
	}
	// Coalesce bursts of events into one message.
	const coalesce = 5 * time.Millisecond
	for {
		var ev store.Event
		var ok bool
		select {
		case ev, ok = <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return status.Error(codes.Unavailable, "the manager's store watch ended; reconnect")
			}
		case <-ctx.Done():
			return nil
		}
		msg := &dispatcherv1.AssignmentsMessage{Type: dispatcherv1.AssignmentsMessage_TYPE_INCREMENTAL}
		timer := time.NewTimer(coalesce)
	collect:
		for {
			d.addChange(msg, ev, s.nodeID, known)
			select {
			case ev, ok = <-events:
				if !ok {
					break collect
				}
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		if len(msg.Changes) > 0 {
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		if !ok {
			return status.Error(codes.Unavailable, "the manager's store watch ended; reconnect")
		}
	}
}

func (d *Dispatcher) addChange(msg *dispatcherv1.AssignmentsMessage, ev store.Event, nodeID string, known map[string]bool) {
	t, isTask := ev.Object.(*typesv1.Task)
	if !isTask {
		return
	}
	switch {
	case ev.Kind == storeRemove():
		if known[t.GetId()] {
			delete(known, t.GetId())
			msg.Changes = append(msg.Changes, &dispatcherv1.AssignmentChange{Action: dispatcherv1.AssignmentChange_ACTION_REMOVE, Item: &dispatcherv1.AssignmentChange_Task{Task: t}})
		}
	case assigned(t, nodeID):
		known[t.GetId()] = true
		msg.Changes = append(msg.Changes, &dispatcherv1.AssignmentChange{Item: &dispatcherv1.AssignmentChange_Task{Task: t}})
	case known[t.GetId()]:
		// Moved off this node.
		delete(known, t.GetId())
		msg.Changes = append(msg.Changes, &dispatcherv1.AssignmentChange{Action: dispatcherv1.AssignmentChange_ACTION_REMOVE, Item: &dispatcherv1.AssignmentChange_Task{Task: t}})
	}
}

// PeerNode is the node a TLS peer's verified certificate names.
func PeerNode(ctx context.Context) (ca.NodeCert, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ca.NodeCert{}, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ca.NodeCert{}, false
	}
	return ca.PeerIdentity(ti.State)
}

// isRemote says whether the caller came over TLS (another node) rather
// than the manager's in-process pipe.
func isRemote(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	_, tlsPeer := p.AuthInfo.(credentials.TLSInfo)
	return tlsPeer
}

// viewInterval is the least time between two network views sent to one
// node: a burst of task changes becomes one view.
const viewInterval = 100 * time.Millisecond

// NetworkView streams a worker's view of the swarm's networking, anew on
// every change of the store (coalesced), until the session ends.
func (d *Dispatcher) NetworkView(req *dispatcherv1.NetworkViewRequest, stream dispatcherv1.Dispatcher_NetworkViewServer) error {
	s, err := d.session(req.GetSessionId())
	if err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		var events <-chan store.Event
		var view *storev1.Snapshot
		var idx uint64
		events = d.store.ViewAndWatch(ctx, func(tx store.ReadTx) { view = networkView(tx) })
		idx = d.store.Index()
		if err := stream.Send(&dispatcherv1.NetworkViewMessage{View: view, Index: idx}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		case _, ok := <-events:
			if ok {
				// Let the burst settle, then send the whole view again.
				select {
				case <-ctx.Done():
					return nil
				case <-s.done:
					return nil
				case <-time.After(viewInterval):
				}
			}
		}
	}
}

// networkView is the part of the store a worker's networking needs, with
// nothing secret: no task or service specs beyond names and endpoints, no
// CA, no join tokens.
func networkView(tx store.ReadTx) *storev1.Snapshot {
	view := &storev1.Snapshot{Version: store.SnapshotVersion}
	services, _ := store.FindServices(tx, store.All)
	for _, s := range services {
		sp := s.GetSpec()
		view.Services = append(view.Services, &typesv1.Service{
			Id: s.GetId(), Meta: s.GetMeta(), Endpoint: s.GetEndpoint(),
			Spec: &typesv1.ServiceSpec{Annotations: sp.GetAnnotations(), Endpoint: sp.GetEndpoint()},
		})
	}
	tasks, _ := store.FindTasks(tx, store.All)
	for _, t := range tasks {
		view.Tasks = append(view.Tasks, &typesv1.Task{
			Id: t.GetId(), Meta: t.GetMeta(), ServiceId: t.GetServiceId(), Slot: t.GetSlot(), NodeId: t.GetNodeId(),
			Status: t.GetStatus(), DesiredState: t.GetDesiredState(), Networks: t.GetNetworks(),
			Endpoint: t.GetEndpoint(), ServiceAnnotations: t.GetServiceAnnotations(),
		})
	}
	view.Networks, _ = store.FindNetworks(tx, store.All)
	nodes, _ := store.FindNodes(tx, store.All)
	for _, n := range nodes {
		view.Nodes = append(view.Nodes, &typesv1.Node{
			Id: n.GetId(), Meta: n.GetMeta(), Role: n.GetRole(), Status: n.GetStatus(), ManagerStatus: n.GetManagerStatus(),
		})
	}
	return view
}
