package manager

import (
	"context"
	"errors"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/manager/controlapi"
	"github.com/shoal-dev/shoal/manager/nodeapi"
	"github.com/shoal-dev/shoal/manager/store"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
)

// errNotManager is Docker's answer to cluster commands on a worker.
var errNotManager = status.Error(codes.FailedPrecondition, "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.")

// workerOnly lets a worker's local socket answer Info, Leave and the node
// API (images, containers); every cluster call gets Docker's refusal.
func workerOnly(method string) error {
	switch method {
	case controlv1.Control_Info_FullMethodName, controlv1.Control_Leave_FullMethodName:
		return nil
	}
	if strings.HasPrefix(method, "/shoal.node.v1.Node/") {
		return nil
	}
	return errNotManager
}

// refuseWrites is a worker's Proposer: it has no Raft.
type refuseWrites struct{}

func (refuseWrites) Propose(context.Context, *storev1.Batch) (uint64, error) {
	return 0, errNotManager
}

// runWorker runs a worker node: the runtime, networking and an agent
// whose dispatcher is the leader among the managers it knows. Its store
// is the network view the dispatcher streams, which the network
// controller reads as a manager's would read the real one.
func (m *Manager) runWorker(ctx context.Context) error {
	cfg := m.cfg
	m.log = m.log.With("node.id", m.state.NodeID)
	for _, d := range []string{cfg.DataDir, cfg.RunDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	var err error
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

	view := store.New()
	m.store = view
	ctl := controlapi.New(view, refuseWrites{}, m.state.NodeID, controlapi.Hooks{
		Info: func(r *controlv1.InfoResponse) {
			r.IsManager = false
			r.ClusterId = m.state.ClusterID
			r.DataDir = cfg.DataDir
			r.AdvertiseAddr = cfg.AdvertiseAddr
			r.Version = Version
		},
		Leave:    m.leaveWorker,
		TaskLogs: m.taskLogs,
	})
	sock, unixLn, err := m.listenControl()
	if err != nil {
		return err
	}
	ctlSrv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := workerOnly(info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := workerOnly(info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}))
	controlv1.RegisterControlServer(ctlSrv, ctl)
	nodev1.RegisterNodeServer(ctlSrv, nodeapi.New(m.rt))
	wg.Add(1)
	go func() { defer wg.Done(); _ = ctlSrv.Serve(unixLn) }()
	defer ctlSrv.Stop()

	// Managers are tried in turn; a follower refuses the session at once,
	// so the leader is found within one round.
	var next atomic.Uint64
	dial := func(ctx context.Context) (dispatcherv1.DispatcherClient, func() error, error) {
		addrs := m.managerAddrs(view)
		if len(addrs) == 0 {
			return nil, nil, errors.New("no manager known")
		}
		addr := addrs[int(next.Add(1)-1)%len(addrs)]
		return m.dialDispatcher(addr)
	}
	onSession := func(ctx context.Context, client dispatcherv1.DispatcherClient, sid string) {
		for ctx.Err() == nil {
			stream, err := client.NetworkView(ctx, &dispatcherv1.NetworkViewRequest{SessionId: sid})
			if err == nil {
				for {
					msg, rerr := stream.Recv()
					if rerr != nil {
						err = rerr
						break
					}
					if rerr := view.Restore(msg.GetView(), msg.GetIndex()); rerr != nil {
						m.log.Warn("network view", "err", rerr)
					}
				}
			}
			if ctx.Err() == nil {
				m.log.Warn("network view stream ended", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}
	stopNode, err := m.startNode(ctx, &wg, view, dial, onSession)
	if err != nil {
		return err
	}
	defer stopNode()
	wg.Add(1)
	go func() { defer wg.Done(); m.renewLoop(ctx) }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.watchOwnRole(ctx, func() { m.restartOnce.Do(func() { close(m.restart) }) })
	}()

	m.log.Info("worker running", "advertise", cfg.AdvertiseAddr, "socket", sock, "managers", m.state.Managers)
	select {
	case <-ctx.Done():
		return nil
	case force := <-m.left:
		cancel()
		ctlSrv.Stop()
		wg.Wait()
		return m.cleanup(force)
	case <-m.restart:
		cancel()
		ctlSrv.Stop()
		wg.Wait()
		return ErrRestart
	}
}

// managerAddrs lists the managers' dispatcher addresses: those in the
// network view (current), then those the node was told when it joined.
func (m *Manager) managerAddrs(view *store.Store) []string {
	seen := map[string]bool{}
	var out []string
	view.View(func(tx store.ReadTx) {
		nodes, _ := store.FindNodes(tx, store.All)
		sort.Slice(nodes, func(i, j int) bool { return nodes[i].GetId() < nodes[j].GetId() })
		for _, n := range nodes {
			if a := n.GetStatus().GetAddr(); n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER && a != "" && !seen[a] && n.GetId() != m.state.NodeID {
				seen[a] = true
				out = append(out, a)
			}
		}
	})
	for _, a := range m.state.Managers {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// leaveWorker: a worker leaves without --force, as in Docker.
func (m *Manager) leaveWorker(bool) error {
	m.leaveOnce.Do(func() {
		go func() { time.Sleep(100 * time.Millisecond); m.left <- true }()
	})
	return nil
}
