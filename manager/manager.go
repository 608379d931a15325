// Package manager is the shoal-manager process: a Raft member holding the
// store, the control API on a root-only unix socket, the dispatcher for
// agents, the leader-only controllers, and an embedded agent so that a
// manager also runs tasks (unless drained).
package manager

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/shoal-dev/shoal/agent"
	agentexec "github.com/shoal-dev/shoal/agent/exec"
	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/lb"
	"github.com/shoal-dev/shoal/lb/dnat"
	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/manager/controlapi"
	"github.com/shoal-dev/shoal/manager/dispatcher"
	"github.com/shoal-dev/shoal/manager/netctl"
	"github.com/shoal-dev/shoal/manager/nodeapi"
	"github.com/shoal-dev/shoal/manager/orchestrator"
	"github.com/shoal-dev/shoal/manager/raftnode"
	"github.com/shoal-dev/shoal/manager/store"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/network/dns"
	clusterv1 "github.com/shoal-dev/shoal/proto/cluster/v1"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/logs"
)

// Version is reported by Info and `shoal version`.
const Version = "0.1.0-dev"

// Config configures a manager. Every path and port is a flag of
// shoal-manager with these defaults, so several nodes can share a machine.
type Config struct {
	DataDir       string // default /var/lib/shoal
	RunDir        string // default /run/shoal
	ListenAddr    string // dispatcher, default 0.0.0.0:2377
	AdvertiseAddr string // default: the listen address, or the host's first address
	RaftAddr      string // default: the listen host, port 2378
	// Init creates a new swarm; without it the manager resumes the one in
	// DataDir (after a crash or reboot).
	Init bool
	// Join is the address of a manager of the swarm to join, with Token
	// (a join token); without Init or Join the manager resumes the swarm
	// in DataDir.
	Join  string
	Token string
	// CertExpiry is how long node certificates last, set at init for the
	// whole swarm (default 90 days, at least 10 s).
	CertExpiry   time.Duration
	InitPath     string // shoal-init; default beside the executable
	CgroupParent string // default "shoal"
	Logger       *slog.Logger
}

// ErrAlreadyInSwarm is returned by an Init on a data dir that has a swarm.
var ErrAlreadyInSwarm = errors.New(`this node is already part of a swarm. Use "shoal swarm leave" to leave this swarm and join another one`)

// ErrNotInSwarm is returned when resuming a data dir with no swarm.
var ErrNotInSwarm = errors.New("this node is not part of a swarm: run `shoal swarm init` (or `shoal swarm join`)")

type nodeState struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id"`
	Role      string `json:"role,omitempty"`
	// Managers are the managers' addresses a worker learnt when it
	// joined; the network view keeps them current.
	Managers []string `json:"managers,omitempty"`
	// RaftJoin is set on a promoted worker until Raft has it as a voter.
	RaftJoin bool `json:"raft_join,omitempty"`
}

// Manager is a running shoal-manager.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	state nodeState
	store *store.Store
	raft  *raftnode.Node
	rt    *runtime.Runtime
	net   *network.Manager
	bal   *lb.Balancer // set before the control API serves
	kern  *dnat.Manager

	ident    *ca.Identity
	pool     *x509.CertPool
	peers    peers
	proposer store.Proposer // forwarder: writes go to the leader

	restart       chan struct{} // closed when the node's role changed
	restartOnce   sync.Once
	removeRaftDir bool

	leaveOnce sync.Once
	left      chan bool // force flag, when Leave was asked
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/shoal"
	}
	if c.RunDir == "" {
		c.RunDir = "/run/shoal"
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:2377"
	}
	host, port, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		return fmt.Errorf("--listen-addr %q: %v (expected host:port)", c.ListenAddr, err)
	}
	if c.RaftAddr == "" {
		p, _ := strconv.Atoi(port)
		c.RaftAddr = net.JoinHostPort(host, strconv.Itoa(p+1))
	}
	if c.AdvertiseAddr == "" {
		h := host
		if h == "" || h == "0.0.0.0" || h == "::" {
			h = firstAddr()
		}
		c.AdvertiseAddr = net.JoinHostPort(h, port)
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "shoal"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// firstAddr is the first non-loopback IPv4 address of the host.
func firstAddr() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "127.0.0.1"
}

func (m *Manager) statePath() string { return filepath.Join(m.cfg.DataDir, "node.json") }

// Run runs the manager until ctx ends or the node leaves the swarm.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.With("component", "manager"), left: make(chan bool, 1), restart: make(chan struct{})}
	return m.run(ctx)
}

func (m *Manager) run(ctx context.Context) error {
	cfg := m.cfg
	m.peers.m = m
	defer m.peers.close()
	m.proposer = forwarder{m}
	fresh, joining := false, false
	var root *ca.CA
	b, err := os.ReadFile(m.statePath())
	switch {
	case err == nil:
		if cfg.Init || cfg.Join != "" {
			return ErrAlreadyInSwarm
		}
		if err := json.Unmarshal(b, &m.state); err != nil {
			return fmt.Errorf("%s: %w", m.statePath(), err)
		}
		if err := m.loadIdentity(); err != nil {
			return err
		}
		if m.state.Role == ca.RoleWorker {
			return m.runWorker(ctx)
		}
	case errors.Is(err, os.ErrNotExist) && cfg.Init:
		fresh = true
		m.state = nodeState{NodeID: identity.NewID(), ClusterID: identity.NewID(), Role: ca.RoleManager}
		if root, err = m.newSwarmIdentity(); err != nil {
			return err
		}
		if err := m.loadIdentity(); err != nil {
			return err
		}
	case errors.Is(err, os.ErrNotExist) && cfg.Join != "":
		joining = true
		resp, keyPEM, err := m.joinSwarm(ctx)
		if err != nil {
			return err
		}
		m.state = nodeState{NodeID: resp.GetNodeId(), ClusterID: resp.GetClusterId(), Role: ca.RoleManager}
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return err
		}
		if err := ca.SaveNode(m.certDir(), resp.GetCertPem(), keyPEM, resp.GetCaPem()); err != nil {
			return err
		}
		if err := m.loadIdentity(); err != nil {
			return err
		}
		if resp.GetRole() != typesv1.NodeRole_NODE_ROLE_MANAGER {
			m.state.Role = ca.RoleWorker
			for _, p := range resp.GetManagers() {
				m.state.Managers = append(m.state.Managers, p.GetAddr())
			}
			if err := writeFileAtomic(m.statePath(), mustJSON(m.state)); err != nil {
				return err
			}
			return m.runWorker(ctx)
		}
	case errors.Is(err, os.ErrNotExist):
		return ErrNotInSwarm
	default:
		return err
	}
	for _, d := range []string{cfg.DataDir, cfg.RunDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	m.log = m.log.With("node.id", m.state.NodeID)

	m.store = store.New()
	m.raft, err = raftnode.Open(raftnode.Config{
		DataDir:       filepath.Join(cfg.DataDir, "raft"),
		ID:            m.state.NodeID,
		BindAddr:      cfg.RaftAddr,
		AdvertiseAddr: advertiseRaft(cfg),
		Bootstrap:     fresh,
		Store:         m.store,
		Logger:        cfg.Logger,
		ServerTLS:     ca.ServerTLS(m.pool, m.ident, ca.Policy{Roles: []string{ca.RoleManager}}),
		ClientTLS:     ca.ClientTLS(m.pool, m.ident, ca.ManagerName),
	})
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	defer m.raft.Shutdown()
	if joining || m.state.RaftJoin {
		via := m.state.Managers
		if joining {
			via = []string{cfg.Join}
		}
		var errs []error
		added := false
		for _, addr := range via {
			c, err := m.peers.conn(addr)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, err = clusterv1.NewClusterClient(c).AddManager(actx, &clusterv1.AddManagerRequest{RaftAddr: advertiseRaft(cfg)})
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				continue
			}
			added = true
			break
		}
		if !added {
			return fmt.Errorf("join raft: %w", errors.Join(errs...))
		}
		if m.state.RaftJoin {
			m.state.RaftJoin = false
			if err := writeFileAtomic(m.statePath(), mustJSON(m.state)); err != nil {
				return err
			}
		}
	}
	if err := m.waitLeader(ctx, 20*time.Second); err != nil {
		return err
	}
	if fresh {
		if err := m.createSwarm(ctx, root); err != nil {
			return err
		}
	}
	if fresh || joining {
		if err := writeFileAtomic(m.statePath(), mustJSON(m.state)); err != nil {
			return err
		}
	}

	m.rt, err = runtime.Open(runtime.Options{Root: cfg.DataDir, RunDir: cfg.RunDir, InitPath: cfg.InitPath, CgroupParent: cfg.CgroupParent, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	defer m.rt.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	m.bal = lb.New(cfg.Logger)
	disp := dispatcher.New(m.store, m.proposer, dispatcher.Config{Logger: cfg.Logger, IsLeader: m.raft.IsLeader})
	ctl := controlapi.New(m.store, m.proposer, m.state.NodeID, controlapi.Hooks{
		Info:          m.info,
		Leave:         m.leave,
		JoinAddr:      func() string { return cfg.AdvertiseAddr },
		TaskLogs:      m.taskLogs,
		NewToken:      m.newToken,
		PortFree:      m.portFree,
		ManagerStatus: m.managerStatus,
	})

	// Control API: root-only unix socket.
	sock, unixLn, err := m.listenControl()
	if err != nil {
		return err
	}
	ctlSrv := grpc.NewServer()
	controlv1.RegisterControlServer(ctlSrv, ctl)
	nodev1.RegisterNodeServer(ctlSrv, nodeapi.New(m.rt))
	wg.Add(1)
	go func() { defer wg.Done(); _ = ctlSrv.Serve(unixLn) }()
	defer ctlSrv.Stop()

	// Dispatcher: TCP for agents of other nodes, an in-process pipe for
	// the embedded agent.
	tcpLn, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.ListenAddr, err)
	}
	// Every TCP connection is mutual TLS; only Join goes without a
	// node certificate.
	pipe := bufconn.Listen(1 << 20)
	dispSrv := grpc.NewServer(grpc.Creds(credentials.NewTLS(m.serverTLS())),
		grpc.UnaryInterceptor(unaryAuth), grpc.StreamInterceptor(streamAuth))
	dispatcherv1.RegisterDispatcherServer(dispSrv, disp)
	clusterv1.RegisterClusterServer(dispSrv, &clusterServer{m: m})
	pipeSrv := grpc.NewServer()
	dispatcherv1.RegisterDispatcherServer(pipeSrv, disp)
	wg.Add(2)
	go func() { defer wg.Done(); _ = dispSrv.Serve(tcpLn) }()
	go func() { defer wg.Done(); _ = pipeSrv.Serve(pipe) }()
	defer dispSrv.Stop()
	defer pipeSrv.Stop()

	wg.Add(1)
	go func() { defer wg.Done(); m.leaderLoop(ctx, disp) }()
	wg.Add(1)
	go func() { defer wg.Done(); m.renewLoop(ctx) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.serveRegistry(ctx); err != nil {
			m.log.Error("image registry", "err", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.watchOwnRole(ctx, func() { m.restartOnce.Do(func() { close(m.restart) }) })
	}()

	// The embedded agent talks to the leader's dispatcher: its own
	// through a pipe while this node leads, another's over TLS.
	dial := func(ctx context.Context) (dispatcherv1.DispatcherClient, func() error, error) {
		if !m.raft.IsLeader() {
			if _, id := m.raft.Leader(); id != "" {
				if addr := m.apiAddrOf(id); addr != "" {
					return m.dialDispatcher(addr)
				}
			}
		}
		conn, err := grpc.NewClient("passthrough:///embedded",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return pipe.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return dispatcherv1.NewDispatcherClient(conn), conn.Close, nil
	}
	stopNode, err := m.startNode(ctx, &wg, m.store, dial, nil)
	if err != nil {
		return err
	}
	defer stopNode()

	m.log.Info("manager running", "listen", cfg.ListenAddr, "advertise", cfg.AdvertiseAddr, "socket", sock)
	select {
	case <-ctx.Done():
		return nil
	case force := <-m.left:
		cancel()
		dispSrv.Stop()
		pipeSrv.Stop()
		ctlSrv.Stop()
		wg.Wait()
		return m.cleanup(force)
	case <-m.restart:
		cancel()
		dispSrv.Stop()
		pipeSrv.Stop()
		ctlSrv.Stop()
		wg.Wait()
		m.raft.Shutdown()
		m.dropRaftState()
		return ErrRestart
	}
}

func advertiseRaft(cfg Config) string {
	h, _, _ := net.SplitHostPort(cfg.AdvertiseAddr)
	_, p, _ := net.SplitHostPort(cfg.RaftAddr)
	return net.JoinHostPort(h, p)
}

func (m *Manager) waitLeader(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !m.raft.IsLeader() {
		if _, id := m.raft.Leader(); id != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("no raft leader after " + d.String() + ": the swarm does not have a leader")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// leaderLoop starts the controllers when this node leads and stops them
// when it no longer does.
func (m *Manager) leaderLoop(ctx context.Context, disp *dispatcher.Dispatcher) {
	var stop context.CancelFunc
	var wg sync.WaitGroup
	start := func() {
		if stop != nil {
			return
		}
		if err := m.raft.Barrier(ctx); err != nil {
			m.log.Warn("barrier before starting controllers", "err", err)
		}
		var cctx context.Context
		cctx, stop = context.WithCancel(ctx)
		m.log.Info("leading: controllers started")
		orch := &orchestrator.Orchestrator{Store: m.store, Prop: m.raft, Log: m.cfg.Logger}
		sched := &orchestrator.Scheduler{Store: m.store, Prop: m.raft, Log: m.cfg.Logger}
		for _, f := range []func(context.Context){orch.Run, sched.Run, disp.Run, m.reconcileRoles} {
			wg.Add(1)
			go func(f func(context.Context)) { defer wg.Done(); f(cctx) }(f)
		}
	}
	halt := func() {
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
			m.log.Info("not leading: controllers stopped")
		}
	}
	defer halt()
	if m.raft.IsLeader() {
		start()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-m.raft.LeaderCh():
			if leader {
				start()
			} else {
				halt()
			}
		}
	}
}

// createSwarm writes the cluster object and this node, the first manager.
func (m *Manager) createSwarm(ctx context.Context, root *ca.CA) error {
	b := m.store.NewBatch()
	b.CreateCluster(&typesv1.Cluster{
		Id: m.state.ClusterID,
		Spec: &typesv1.ClusterSpec{Annotations: &typesv1.Annotations{Name: "default"}, TaskHistoryLimit: orchestrator.DefaultHistoryLimit,
			NodeCertExpiry: durationpb.New(m.certExpiry())},
		JoinTokens: &typesv1.JoinTokens{Worker: mustToken(root), Manager: mustToken(root)},
		RootCa:     &typesv1.RootCA{CaCert: root.CertPEM, CaKey: root.KeyPEM, CaDigest: root.Digest()},
	})
	b.CreateNode(&typesv1.Node{
		Id:            m.state.NodeID,
		Role:          typesv1.NodeRole_NODE_ROLE_MANAGER,
		Spec:          &typesv1.NodeSpec{Annotations: &typesv1.Annotations{}, DesiredRole: typesv1.NodeRole_NODE_ROLE_MANAGER},
		Description:   m.describe(),
		Status:        &typesv1.NodeStatus{State: typesv1.NodeState_NODE_STATE_READY, Addr: m.cfg.AdvertiseAddr},
		ManagerStatus: &typesv1.ManagerStatus{RaftId: m.state.NodeID, Addr: advertiseRaft(m.cfg), Leader: true, Reachability: typesv1.Reachability_REACHABILITY_REACHABLE},
	})
	_, err := m.raft.Propose(ctx, b.Proto())
	return err
}

// newToken makes a join token of the swarm's CA, for rotation.
func (m *Manager) newToken() string {
	root, _, err := m.signer()
	if err != nil {
		m.log.Error("join token", "err", err)
		return ""
	}
	return mustToken(root)
}

func mustToken(root *ca.CA) string {
	t, err := ca.NewToken(root)
	if err != nil {
		panic(err) // crypto/rand failing
	}
	return t
}

func randBase36(n int) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	out := make([]byte, n)
	for i := range out {
		k, _ := rand.Int(rand.Reader, big.NewInt(36))
		out[i] = alphabet[k.Int64()]
	}
	return string(out)
}

func (m *Manager) info(r *controlv1.InfoResponse) {
	r.ClusterId = m.state.ClusterID
	addr, _ := m.raft.Leader()
	r.LeaderAddr = addr
	if m.raft.IsLeader() {
		r.RaftState = "Leader"
	} else {
		r.RaftState = "Follower"
	}
	r.DataDir = m.cfg.DataDir
	r.AdvertiseAddr = m.cfg.AdvertiseAddr
	r.Version = Version
}

func (m *Manager) leave(force bool) error {
	servers, err := m.raft.Servers()
	if err != nil {
		servers = nil
	}
	if len(servers) <= 1 {
		// A lone manager leaving destroys the swarm: Docker asks for --force.
		if !force {
			return errors.New("you are attempting to leave the swarm on a node that is participating as a manager. Removing the last manager erases all current state of the swarm. Use `--force` to ignore this message")
		}
	} else {
		// Managers left reachable after this one goes, against the
		// quorum of the smaller configuration.
		reachable := 0
		m.store.View(func(tx store.ReadTx) {
			for _, sv := range servers {
				n := store.GetNode(tx, string(sv.ID))
				if string(sv.ID) != m.state.NodeID && n != nil && n.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY {
					reachable++
				}
			}
		})
		quorum := (len(servers)-1)/2 + 1
		if reachable < quorum && !force {
			return fmt.Errorf("you are attempting to leave the swarm on a node that is participating as a manager. Removing this node leaves %d managers out of %d. Without a Raft quorum your swarm will be inaccessible. The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message", reachable, len(servers))
		}
		// Out of Raft first, through the leader (another one, if this
		// node leads), so that the rest keep their quorum.
		if m.raft.IsLeader() {
			if err := m.raft.LeadershipTransfer(); err != nil && !force {
				return fmt.Errorf("hand over leadership before leaving: %w", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var rerr error
		for ctx.Err() == nil {
			cli, err := m.leaderClient()
			if err == nil {
				_, err = cli.RemoveManager(ctx, &clusterv1.RemoveManagerRequest{NodeId: m.state.NodeID})
			}
			if rerr = err; err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if rerr != nil && !force {
			return fmt.Errorf("leave raft: %w", rerr)
		}
	}
	m.leaveOnce.Do(func() {
		// Reply first, then tear down.
		go func() { time.Sleep(100 * time.Millisecond); m.left <- force }()
	})
	return nil
}

// cleanup removes every container, cgroup and file this node made.
func (m *Manager) cleanup(bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, c := range m.rt.List() {
		zero := time.Duration(0)
		_ = m.rt.Stop(ctx, c.ID, &zero)
		if err := m.rt.Remove(ctx, c.ID, true); err != nil {
			errs = append(errs, err)
		}
	}
	m.rt.Close()
	if err := m.net.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	if m.kern != nil {
		if err := m.kern.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if m.raft != nil {
		m.raft.Shutdown()
	}
	if err := cgroups.DeleteParent(m.cfg.CgroupParent); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(m.cfg.DataDir); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(filepath.Join(m.cfg.RunDir, "shoal.sock"))
	_ = os.Remove(m.cfg.RunDir) // only if empty
	m.log.Info("left the swarm")
	return errors.Join(errs...)
}

func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err)
	}
	return b
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// taskLogs reads the log of a task's container on this node.
func (m *Manager) taskLogs(ctx context.Context, t *typesv1.Task, o controlapi.LogOptions, send func(string, []byte, time.Time) error) error {
	name := agentexec.ContainerName(t)
	if _, err := m.rt.Inspect(name); err != nil {
		// Never created here (rejected, or not yet prepared): no log.
		return nil
	}
	return m.rt.Logs(ctx, name, logs.ReadOptions{Follow: o.Follow, Tail: o.Tail, Since: o.Since}, func(e logs.Entry) error {
		return send(e.Stream, []byte(e.Log), e.Time)
	})
}

// taskNetwork gives a task its network namespace: host and none as asked,
// otherwise a namespace attached to the task's networks, with the first
// network's gateway as its DNS server.
func (m *Manager) taskNetwork(t *typesv1.Task) (runtime.Network, error) {
	switch t.GetSpec().GetContainer().GetNetworkMode() {
	case "host":
		return runtime.Network{Mode: runtime.NetworkHost}, nil
	case "none":
		return runtime.Network{Mode: runtime.NetworkNone}, nil
	}
	if len(t.GetNetworks()) == 0 {
		return runtime.Network{Mode: runtime.NetworkNone}, nil
	}
	ns, ip, err := m.net.Attach(t.GetId(), t.GetNetworks())
	if err != nil {
		return runtime.Network{}, err
	}
	n := runtime.Network{Mode: runtime.NetworkNamespace, Path: ns, IP: ip}
	if gw, ok := m.net.Gateways()[t.GetNetworks()[0].GetNetwork().GetId()]; ok {
		n.DNS = []string{gw.String()}
	}
	return n, nil
}

// portFree says whether a published port that no service has yet can be
// bound on this node: a program of the host's listening there would get
// the connections meant for the service (Docker's ingress does not check
// and silently takes the port over). A port the ingress balancer still
// holds for a service just removed is shoal's, so free.
func (m *Manager) portFree(port uint32, proto string) error {
	if m.bal.Publishes(uint16(port), proto) {
		return nil
	}
	addr := net.JoinHostPort("", strconv.Itoa(int(port)))
	var err error
	if proto == "udp" {
		var c net.PacketConn
		if c, err = net.ListenPacket("udp", addr); err == nil {
			c.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			l.Close()
		}
	}
	if errors.Is(err, unix.EADDRINUSE) {
		host, _ := os.Hostname()
		return fmt.Errorf("port %d/%s is already in use on node %s by a program outside the swarm", port, proto, host)
	}
	if err != nil {
		return fmt.Errorf("port %d/%s cannot be published on node: %w", port, proto, err)
	}
	return nil
}

// describe is this node's description as a joining node sends it; the
// agent keeps it current once it runs.
func (m *Manager) describe() *typesv1.NodeDescription {
	host, _ := os.Hostname()
	var mem int64
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		mem = int64(si.Totalram) * int64(si.Unit)
	}
	return &typesv1.NodeDescription{
		Hostname: host, Os: goruntime.GOOS, Architecture: goruntime.GOARCH, Version: Version,
		Resources: &typesv1.Resources{NanoCpus: int64(goruntime.NumCPU()) * 1e9, MemoryBytes: mem},
	}
}

// managerStatus fills a manager node's Raft status as this manager sees
// it: the leader Raft names, and reachability from the node's heartbeats
// (a manager whose agent stopped heartbeating the leader is Unreachable).
func (m *Manager) managerStatus(n *typesv1.Node) {
	_, leader := m.raft.Leader()
	ms := n.GetManagerStatus()
	if ms == nil {
		ms = &typesv1.ManagerStatus{RaftId: n.GetId()}
		n.ManagerStatus = ms
	}
	ms.Leader = leader != "" && leader == n.GetId()
	switch {
	case ms.Leader || n.GetId() == m.state.NodeID || n.GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY:
		ms.Reachability = typesv1.Reachability_REACHABILITY_REACHABLE
	default:
		ms.Reachability = typesv1.Reachability_REACHABILITY_UNREACHABLE
	}
}

// startNode starts what every node runs beside its runtime: networking
// (bridges, namespaces), service discovery, the load balancers, the
// network controller over st (the store on a manager, the dispatcher's
// network view on a worker), and the agent, which reaches a dispatcher
// through dial. The returned function releases what outlives ctx.
func (m *Manager) startNode(ctx context.Context, wg *sync.WaitGroup, st *store.Store,
	dial func(context.Context) (dispatcherv1.DispatcherClient, func() error, error),
	onSession func(context.Context, dispatcherv1.DispatcherClient, string)) (func(), error) {
	cfg := m.cfg
	var err error
	// Overlay networks reach other nodes from the advertised address.
	host, _, _ := net.SplitHostPort(cfg.AdvertiseAddr)
	m.net, err = network.New(network.Config{RunDir: cfg.RunDir, Logger: cfg.Logger, UnderlayAddr: net.ParseIP(host)})
	if err != nil {
		return nil, err
	}
	if err := m.net.Restore(); err != nil {
		m.log.Warn("restore networks", "err", err)
	}
	// The kernel table outlives a manager restart, so that published
	// ports and VIPs keep working meanwhile; leaving removes it.
	m.kern, err = dnat.New(dnat.Config{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if m.bal == nil {
		m.bal = lb.New(cfg.Logger)
	}
	bal := m.bal
	dnsSrv := dns.New(dns.Config{Logger: cfg.Logger})
	nc := &netctl.Controller{Store: st, NodeID: m.state.NodeID, Net: m.net, DNS: dnsSrv, LB: bal, Kernel: m.kern, Log: cfg.Logger}
	wg.Add(1)
	go func() { defer wg.Done(); nc.Run(ctx) }()

	exe := &agentexec.RuntimeExecutor{
		Runtime:    m.rt,
		Version:    Version,
		Logger:     cfg.Logger,
		Network:    m.taskNetwork,
		BeforeStop: func(t *typesv1.Task) { nc.Drain(t.GetId()) },
		Publish:    nc.PublishHost,
		Pull:       m.pullImage,
		AfterRemove: func(t *typesv1.Task) {
			nc.TaskRemoved(t)
			_ = m.net.Detach(t.GetId())
		},
	}
	ag := agent.New(agent.Config{
		Executor:  exe,
		NodeID:    m.state.NodeID,
		Addr:      cfg.AdvertiseAddr,
		Logger:    cfg.Logger,
		Dial:      dial,
		OnSession: onSession,
		Explain:   ca.Explain,
	})
	wg.Add(1)
	go func() { defer wg.Done(); _ = ag.Run(ctx) }()
	return func() {
		dnsSrv.Close()
		bal.Close()
	}, nil
}

// dialDispatcher connects to the dispatcher of the manager at addr with
// this node's certificate.
func (m *Manager) dialDispatcher(addr string) (dispatcherv1.DispatcherClient, func() error, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLS(m.pool, m.ident, ca.ManagerName))))
	if err != nil {
		return nil, nil, err
	}
	return dispatcherv1.NewDispatcherClient(conn), conn.Close, nil
}

// listenControl listens on the root-only control socket,
// <run-dir>/shoal.sock.
func (m *Manager) listenControl() (string, net.Listener, error) {
	sock := filepath.Join(m.cfg.RunDir, "shoal.sock")
	_ = os.Remove(sock)
	old := unix.Umask(0o077)
	ln, err := net.Listen("unix", sock)
	unix.Umask(old)
	if err != nil {
		return "", nil, fmt.Errorf("control socket %s: %w", sock, err)
	}
	return sock, ln, nil
}
