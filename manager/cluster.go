package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/manager/dispatcher"
	"github.com/shoal-dev/shoal/manager/raftnode"
	"github.com/shoal-dev/shoal/manager/store"
	clusterv1 "github.com/shoal-dev/shoal/proto/cluster/v1"
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// ErrNoLeader is what a write gets when the managers cannot elect a leader
// (no quorum): it fails at once instead of hanging.
var ErrNoLeader = errors.New("the swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online")

// certExpiry is the validity of this node's own first certificate at
// init: Config.CertExpiry or ca.DefaultValidity.
func (m *Manager) certExpiry() time.Duration {
	if m.cfg.CertExpiry > 0 {
		return m.cfg.CertExpiry
	}
	return ca.DefaultValidity
}

// validity is how long the certificates the swarm issues last: the
// cluster's setting.
func validity(cl *typesv1.Cluster) time.Duration {
	if d := cl.GetSpec().GetNodeCertExpiry().AsDuration(); d > 0 {
		return d
	}
	return ca.DefaultValidity
}

func (m *Manager) certDir() string { return filepath.Join(m.cfg.DataDir, "certificates") }

// newSwarmIdentity makes the swarm's CA and this first manager's
// certificate, and saves the certificate.
func (m *Manager) newSwarmIdentity() (*ca.CA, error) {
	root, err := ca.New(m.state.ClusterID, time.Now())
	if err != nil {
		return nil, err
	}
	key, _, err := ca.NewKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := root.Issue(key.Public(), m.state.NodeID, ca.RoleManager, time.Now(), m.certExpiry())
	if err != nil {
		return nil, err
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	if err := ca.SaveNode(m.certDir(), certPEM, keyPEM, root.CertPEM); err != nil {
		return nil, err
	}
	return root, nil
}

// loadIdentity reads this node's certificate, key and the swarm's CA.
func (m *Manager) loadIdentity() error {
	cert, pool, _, err := ca.LoadNode(m.certDir())
	if err != nil {
		return fmt.Errorf("node certificate: %w", err)
	}
	m.ident, err = ca.NewIdentity(cert)
	if err != nil {
		return err
	}
	m.pool = pool
	return nil
}

// revoked refuses certificates of nodes the swarm no longer has (`node
// rm`), once this manager's store knows the swarm at all.
func (m *Manager) revoked(nc ca.NodeCert) bool {
	gone := false
	m.store.View(func(tx store.ReadTx) {
		clusters, _ := store.FindClusters(tx, store.All)
		gone = len(clusters) > 0 && store.GetNode(tx, nc.NodeID) == nil
	})
	return gone
}

// serverTLS is the dispatcher port's TLS: a node's certificate, or none
// for the Join call.
func (m *Manager) serverTLS() *tls.Config {
	return ca.ServerTLS(m.pool, m.ident, ca.Policy{AllowAnonymous: true, Revoked: m.revoked})
}

const joinMethod = "/shoal.cluster.v1.Cluster/Join"

// requireIdentity lets only Join through without a node certificate.
func requireIdentity(ctx context.Context, method string) error {
	if method == joinMethod {
		return nil
	}
	if _, ok := dispatcher.PeerNode(ctx); !ok {
		return status.Error(codes.Unauthenticated, "a node certificate is required: join the swarm first")
	}
	return nil
}

func unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := requireIdentity(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := requireIdentity(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// peers keeps one connection per other manager's API address.
type peers struct {
	m     *Manager
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (p *peers) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS(p.m.pool, p.m.ident, ca.ManagerName))))
	if err != nil {
		return nil, err
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// apiAddrOf is the dispatcher address of manager nodeID, from the store.
func (m *Manager) apiAddrOf(nodeID string) string {
	var addr string
	m.store.View(func(tx store.ReadTx) {
		if n := store.GetNode(tx, nodeID); n != nil {
			addr = n.GetStatus().GetAddr()
		}
	})
	return addr
}

// leaderClient returns the Cluster API of the current leader, which is
// not this node.
func (m *Manager) leaderClient() (clusterv1.ClusterClient, error) {
	_, id := m.raft.Leader()
	if id == "" {
		return nil, ErrNoLeader
	}
	addr := m.apiAddrOf(id)
	if addr == "" {
		return nil, fmt.Errorf("the leader %s is not in this manager's store yet", id)
	}
	c, err := m.peers.conn(addr)
	if err != nil {
		return nil, err
	}
	return clusterv1.NewClusterClient(c), nil
}

// forwarder is the store.Proposer of every manager: the leader applies a
// batch through Raft, a follower hands it to the leader and returns once
// its own store has it too, so a write is visible to the next read on the
// same manager.
type forwarder struct{ m *Manager }

var _ store.Proposer = forwarder{}

// proposeTimeout bounds a write when no leader answers: without quorum a
// write must fail, not hang.
const proposeTimeout = 10 * time.Second

// forwardAttempt bounds one forwarded proposal.
const forwardAttempt = 4 * time.Second

// noLeaderWait is how long a write waits for a leader to appear.
const noLeaderWait = 3 * time.Second

func (f forwarder) Propose(ctx context.Context, b *storev1.Batch) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, proposeTimeout)
	defer cancel()
	// An election takes about a second; no leader for longer than
	// noLeaderWait means no quorum, and the write fails now.
	var noLeaderSince time.Time
	wait := func() error {
		if noLeaderSince.IsZero() {
			noLeaderSince = time.Now()
		} else if time.Since(noLeaderSince) > noLeaderWait {
			return ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return ErrNoLeader
		case <-time.After(50 * time.Millisecond):
			return nil
		}
	}
	for {
		idx, err := f.m.raft.Propose(ctx, b)
		if !errors.Is(err, raftnode.ErrNotLeader) {
			if err != nil && ctx.Err() != nil {
				return 0, ErrNoLeader
			}
			return idx, err
		}
		cli, err := f.m.leaderClient()
		if errors.Is(err, ErrNoLeader) {
			// An election may be under way: wait for it, within bounds.
			if err := wait(); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		// One attempt is bounded on its own: a leader cut off by a
		// partition does not answer at all, and Raft here may take a
		// while to notice.
		actx, acancel := context.WithTimeout(ctx, forwardAttempt)
		dl, _ := actx.Deadline()
		resp, err := cli.Propose(actx, &clusterv1.ProposeRequest{Batch: b, Deadline: timestamppb.New(dl)})
		acancel()
		if err != nil {
			if st, ok := status.FromError(err); ok {
				switch st.Code() {
				case codes.Aborted:
					return 0, fmt.Errorf("%w: %s", store.ErrSequenceConflict, st.Message())
				case codes.FailedPrecondition, codes.Unavailable:
					// The leader changed or is gone: ask Raft again.
					if err := wait(); err != nil {
						return 0, err
					}
					continue
				case codes.InvalidArgument:
					return 0, fmt.Errorf("%w: %s", store.ErrInvalid, st.Message())
				}
			}
			if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
				return 0, ErrNoLeader
			}
			return 0, err
		}
		for f.m.store.Index() < resp.GetIndex() {
			select {
			case <-ctx.Done():
				return resp.GetIndex(), nil
			case <-time.After(2 * time.Millisecond):
			}
		}
		return resp.GetIndex(), nil
	}
}

// clusterServer implements clusterv1.ClusterServer.
type clusterServer struct {
	clusterv1.UnimplementedClusterServer
	m *Manager
}

func (s *clusterServer) caller(ctx context.Context, role string) (ca.NodeCert, error) {
	nc, ok := dispatcher.PeerNode(ctx)
	if !ok {
		return nc, status.Error(codes.Unauthenticated, "a node certificate is required")
	}
	if role != "" && nc.Role != role {
		return nc, status.Errorf(codes.PermissionDenied, "only a %s may call this; node %s is a %s", role, nc.NodeID, nc.Role)
	}
	return nc, nil
}

// signer is the swarm's CA with its key, from the store.
func (m *Manager) signer() (*ca.CA, *typesv1.Cluster, error) {
	var cl *typesv1.Cluster
	m.store.View(func(tx store.ReadTx) {
		if cs, _ := store.FindClusters(tx, store.All); len(cs) > 0 {
			cl = cs[0]
		}
	})
	if cl == nil || cl.GetRootCa() == nil {
		return nil, nil, errors.New("this manager does not know the swarm's CA yet")
	}
	c, err := ca.Load(cl.GetRootCa().GetCaCert(), cl.GetRootCa().GetCaKey())
	return c, cl, err
}

func (m *Manager) managerPeers() []*clusterv1.ManagerPeer {
	var out []*clusterv1.ManagerPeer
	m.store.View(func(tx store.ReadTx) {
		nodes, _ := store.FindNodes(tx, store.All)
		for _, n := range nodes {
			if n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER {
				out = append(out, &clusterv1.ManagerPeer{NodeId: n.GetId(), Addr: n.GetStatus().GetAddr(), RaftAddr: n.GetManagerStatus().GetAddr()})
			}
		}
	})
	return out
}

// Join admits a node that presents a valid token: a new node id, a
// certificate for the token's role, and the node in the store.
func (s *clusterServer) Join(ctx context.Context, req *clusterv1.JoinRequest) (*clusterv1.JoinResponse, error) {
	root, cl, err := s.m.signer()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	role, err := ca.MatchToken(req.GetToken(), cl.GetJoinTokens().GetWorker(), cl.GetJoinTokens().GetManager())
	if err != nil {
		s.m.log.Warn("join refused", "addr", req.GetAddr(), "err", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	id := identity.NewID()
	certPEM, err := root.SignCSR(req.GetCsr(), id, role, time.Now(), validity(cl))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	nodeRole := typesv1.NodeRole_NODE_ROLE_WORKER
	if role == ca.RoleManager {
		nodeRole = typesv1.NodeRole_NODE_ROLE_MANAGER
	}
	b := s.m.store.NewBatch()
	n := &typesv1.Node{
		Id:          id,
		Role:        nodeRole,
		Spec:        &typesv1.NodeSpec{Annotations: &typesv1.Annotations{}, DesiredRole: nodeRole},
		Description: req.GetDescription(),
		Status:      &typesv1.NodeStatus{State: typesv1.NodeState_NODE_STATE_UNKNOWN, Addr: req.GetAddr()},
	}
	b.CreateNode(n)
	if _, err := s.m.proposer.Propose(ctx, b.Proto()); err != nil {
		return nil, status.Errorf(codes.Unavailable, "record the node: %v", err)
	}
	s.m.log.Info("node joined", "node.id", id, "role", role, "addr", req.GetAddr())
	return &clusterv1.JoinResponse{
		NodeId: id, Role: nodeRole, CertPem: certPEM, CaPem: root.CertPEM,
		Managers: s.m.managerPeers(), ClusterId: root.ClusterID(),
	}, nil
}

// AddManager makes the calling manager a Raft voter.
func (s *clusterServer) AddManager(ctx context.Context, req *clusterv1.AddManagerRequest) (*clusterv1.AddManagerResponse, error) {
	nc, err := s.caller(ctx, ca.RoleManager)
	if err != nil {
		return nil, err
	}
	if !s.m.raft.IsLeader() {
		cli, err := s.m.leaderClient()
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		// Forwarded with this manager's certificate, naming the node.
		id := req.GetNodeId()
		if id == "" {
			id = nc.NodeID
		}
		return cli.AddManager(ctx, &clusterv1.AddManagerRequest{RaftAddr: req.GetRaftAddr(), NodeId: id})
	}
	addr, id := req.GetRaftAddr(), nc.NodeID
	if req.GetNodeId() != "" {
		// Only managers call this; the node forwarded must be a manager
		// the store knows, checked below.
		id = req.GetNodeId()
	}
	var known bool
	s.m.store.View(func(tx store.ReadTx) {
		n := store.GetNode(tx, id)
		known = n != nil && n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER
	})
	if !known {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not a manager of this swarm", id)
	}
	if err := s.m.raft.AddVoter(id, addr); err != nil {
		return nil, status.Errorf(codes.Unavailable, "add %s to raft: %v", id, err)
	}
	for attempt := 0; attempt < 5; attempt++ {
		b := s.m.store.NewBatch()
		var n *typesv1.Node
		s.m.store.View(func(tx store.ReadTx) { n = store.GetNode(tx, id) })
		if n == nil {
			break
		}
		n.ManagerStatus = &typesv1.ManagerStatus{RaftId: id, Addr: addr, Reachability: typesv1.Reachability_REACHABILITY_REACHABLE}
		b.UpdateNode(n)
		if _, err := s.m.proposer.Propose(ctx, b.Proto()); !errors.Is(err, store.ErrSequenceConflict) {
			break
		}
	}
	s.m.log.Info("manager added to raft", "node.id", id, "raft.addr", addr)
	return &clusterv1.AddManagerResponse{Managers: s.m.managerPeers()}, nil
}

// RemoveManager takes a manager out of Raft (leader only).
func (s *clusterServer) RemoveManager(ctx context.Context, req *clusterv1.RemoveManagerRequest) (*clusterv1.RemoveManagerResponse, error) {
	if _, err := s.caller(ctx, ca.RoleManager); err != nil {
		return nil, err
	}
	if !s.m.raft.IsLeader() {
		cli, err := s.m.leaderClient()
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		return cli.RemoveManager(ctx, req)
	}
	if err := s.m.raft.RemoveServer(req.GetNodeId()); err != nil {
		return nil, status.Errorf(codes.Unavailable, "remove %s from raft: %v", req.GetNodeId(), err)
	}
	return &clusterv1.RemoveManagerResponse{}, nil
}

// Propose applies a follower's batch (leader only).
func (s *clusterServer) Propose(ctx context.Context, req *clusterv1.ProposeRequest) (*clusterv1.ProposeResponse, error) {
	if _, err := s.caller(ctx, ca.RoleManager); err != nil {
		return nil, err
	}
	if d := req.GetDeadline(); d != nil && time.Now().After(d.AsTime()) {
		// The sender has given up on it: applying it now would make a
		// write it reported as failed happen after all.
		return nil, status.Error(codes.DeadlineExceeded, "the proposal arrived after its deadline")
	}
	if d := req.GetDeadline(); d != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, d.AsTime())
		defer cancel()
	}
	idx, err := s.m.raft.Propose(ctx, req.GetBatch())
	switch {
	case err == nil:
		return &clusterv1.ProposeResponse{Index: idx}, nil
	case errors.Is(err, raftnode.ErrNotLeader):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrSequenceConflict):
		return nil, status.Error(codes.Aborted, err.Error())
	case errors.Is(err, store.ErrInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return nil, status.Error(codes.Unavailable, err.Error())
}

// RenewCertificate signs a new certificate with the node id and role the
// store has for the caller.
func (s *clusterServer) RenewCertificate(ctx context.Context, req *clusterv1.RenewCertificateRequest) (*clusterv1.RenewCertificateResponse, error) {
	nc, err := s.caller(ctx, "")
	if err != nil {
		return nil, err
	}
	root, cl, err := s.m.signer()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	var n *typesv1.Node
	s.m.store.View(func(tx store.ReadTx) { n = store.GetNode(tx, nc.NodeID) })
	if n == nil {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not part of this swarm", nc.NodeID)
	}
	role := ca.RoleWorker
	if n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER {
		role = ca.RoleManager
	}
	certPEM, err := root.SignCSR(req.GetCsr(), nc.NodeID, role, time.Now(), validity(cl))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	return &clusterv1.RenewCertificateResponse{CertPem: certPEM}, nil
}

// joinSwarm asks the manager at cfg.Join for a certificate with the token:
// the manager's CA must match the token's digest before anything is sent.
func (m *Manager) joinSwarm(ctx context.Context) (*clusterv1.JoinResponse, []byte, error) {
	tok, err := ca.ParseToken(m.cfg.Token)
	if err != nil {
		return nil, nil, err
	}
	key, csr, err := ca.NewKey()
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+m.cfg.Join, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSPinned(tok.Digest))))
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := clusterv1.NewClusterClient(conn).Join(ctx, &clusterv1.JoinRequest{
		Token: m.cfg.Token, Csr: csr, Addr: m.cfg.AdvertiseAddr, Description: m.describe(),
	})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return nil, nil, fmt.Errorf("join %s: %s", m.cfg.Join, ca.Explain(errors.New(st.Message())))
		}
		return nil, nil, fmt.Errorf("join %s: %w", m.cfg.Join, ca.Explain(err))
	}
	if err := tok.CheckCA(resp.GetCaPem()); err != nil {
		return nil, nil, err
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		return nil, nil, err
	}
	return resp, keyPEM, nil
}

// caPool reads a PEM CA certificate into a pool.
func caPool(caPEM []byte) (*x509.CertPool, error) {
	cert, err := ca.ParseCertPEM(caPEM)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p, nil
}
