// Package raftnode runs a manager's Raft member (hashicorp/raft, with
// raft-boltdb/v2 for the log and file snapshots) around the store: it
// proposes batches on the leader, applies committed ones to the store on
// every manager, and reports leadership so the leader-only controllers can
// start and stop.
package raftnode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/shoal-dev/shoal/manager/store"
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
)

// Timeouts by default. Raft's own (1 s heartbeat and election) take two to
// four seconds to replace a dead leader; these elect a new one within about
// two, which matters since no task can be scheduled meanwhile.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	DefaultCommitTimeout      = 20 * time.Millisecond
	// DefaultSnapshotRetain is how many snapshots stay on disk.
	DefaultSnapshotRetain = 2
)

// opTimeout bounds how long membership changes wait to be queued.
const opTimeout = 10 * time.Second

var (
	// ErrNotLeader is returned by writes on a follower; the error is a
	// *NotLeaderError that names the leader, to which the API layer
	// forwards.
	ErrNotLeader = errors.New("this manager is not the leader")
	// ErrNoLeader is returned by writes while no leader is known (an
	// election is running, or quorum is lost).
	ErrNoLeader = errors.New("the swarm does not have a leader")
	// ErrLeadershipLost is returned when this manager stopped being the
	// leader before a batch it proposed was committed: the batch may or may
	// not be applied. Retrying is safe, since the batch's versions make a
	// second application fail with store.ErrSequenceConflict.
	ErrLeadershipLost = errors.New("leadership lost while committing; the change may or may not have been applied")
	// ErrShutdown is returned after Shutdown.
	ErrShutdown = errors.New("raft node is shut down")
)

// NotLeaderError is ErrNotLeader with the leader's Raft address and id.
type NotLeaderError struct {
	LeaderAddr string
	LeaderID   string
}

// Error names the leader, so that a user who sees it knows where to go.
func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("this manager is not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Config configures Open. DataDir, ID, Store and either BindAddr or
// Transport are required.
type Config struct {
	// DataDir is the node's Raft directory (<data-dir>/raft): raft.db holds
	// the log and Raft's own state (bbolt), snapshots/ the snapshots.
	DataDir string
	// ID is the Raft server id: the node id.
	ID string
	// BindAddr is where Raft listens, e.g. "0.0.0.0:2378"; port 0 takes a
	// free one.
	BindAddr string
	// AdvertiseAddr is the address peers dial; required when BindAddr's
	// host is unspecified. Its port may be omitted or 0: the bound one.
	AdvertiseAddr string
	// Bootstrap makes this node the first manager: with no Raft state on
	// disk, it starts a cluster whose only voter it is. With state on disk
	// it is ignored.
	Bootstrap bool
	// Store is the state the log is applied to; it must be empty (Raft
	// rebuilds it from the snapshot and the log).
	Store *store.Store
	// Logger defaults to slog.Default; Open adds component=raft and
	// node.id, and raft's own logging goes there too.
	Logger *slog.Logger

	HeartbeatTimeout   time.Duration // default DefaultHeartbeatTimeout
	ElectionTimeout    time.Duration // default DefaultElectionTimeout
	LeaderLeaseTimeout time.Duration // default DefaultLeaderLeaseTimeout
	CommitTimeout      time.Duration // default DefaultCommitTimeout
	// SnapshotThreshold and SnapshotInterval: a snapshot is taken when at
	// least SnapshotThreshold entries were appended since the last one,
	// checked every SnapshotInterval; raft's defaults (8192, 120 s) if zero.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// that a follower slightly behind catches up without the whole snapshot;
	// raft's default (10240) if zero.
	TrailingLogs   uint64
	SnapshotRetain int // default DefaultSnapshotRetain

	// ServerTLS and ClientTLS, when both set, make every Raft connection
	// mutual TLS (manager/ca's configs: managers only).
	ServerTLS, ClientTLS *tls.Config

	// Transport, if set, replaces the TCP transport on BindAddr; its
	// LocalAddr is the advertised address.
	Transport raft.Transport
}

// Node is a running Raft member. It implements store.Proposer.
type Node struct {
	raft   *raft.Raft
	logs   *raftboltdb.BoltStore
	log    *slog.Logger
	id     string
	addr   string
	store  *store.Store
	leader chan bool

	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
}

var _ store.Proposer = (*Node)(nil)

// Open starts the Raft member: it opens (or creates) the data dir, restores
// the store from the last snapshot (entries after it are applied once the
// commit index is known: call Barrier on the leader before relying on the
// store), and bootstraps if asked and nothing is on disk.
func Open(cfg Config) (*Node, error) {
	if cfg.DataDir == "" || cfg.ID == "" || cfg.Store == nil {
		return nil, errors.New("raftnode: DataDir, ID and Store are required")
	}
	if idx := cfg.Store.Index(); idx != 0 {
		// Raft rebuilds the store from the snapshot and the log; entries
		// replayed onto a store that is already ahead would be refused.
		return nil, fmt.Errorf("raftnode: the store must be empty (it is at index %d): Raft rebuilds it", idx)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.Default()
	}
	lg = lg.With("component", "raft", "node.id", cfg.ID)
	hlog := newHCLogger(lg)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raft data dir: %w", err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	// Opened resources are closed on any later error.
	ok := false
	defer func() {
		if !ok {
			bolt.Close()
		}
	}()
	// A cache of recent entries spares bbolt reads when replicating them.
	logs, err := raft.NewLogCache(512, bolt)
	if err != nil {
		return nil, err
	}
	retain := cfg.SnapshotRetain
	if retain <= 0 {
		retain = DefaultSnapshotRetain
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, retain, hlog.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("raft snapshot store: %w", err)
	}

	trans := cfg.Transport
	if trans == nil {
		if cfg.BindAddr == "" {
			return nil, errors.New("raftnode: BindAddr or Transport is required")
		}
		if (cfg.ServerTLS == nil) != (cfg.ClientTLS == nil) {
			return nil, errors.New("raftnode: ServerTLS and ClientTLS go together")
		}
		stream, err := listenTCP(cfg.BindAddr, cfg.AdvertiseAddr, cfg.ServerTLS, cfg.ClientTLS)
		if err != nil {
			return nil, err
		}
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  stream,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  hlog.Named("net"),
		})
	}
	defer func() {
		if !ok {
			if c, isCloser := trans.(raft.WithClose); isCloser {
				c.Close()
			}
		}
	}()

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = orDefault(cfg.HeartbeatTimeout, DefaultHeartbeatTimeout)
	rc.ElectionTimeout = orDefault(cfg.ElectionTimeout, DefaultElectionTimeout)
	rc.LeaderLeaseTimeout = orDefault(cfg.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	rc.CommitTimeout = orDefault(cfg.CommitTimeout, DefaultCommitTimeout)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	// Concurrent proposals (agents' status bursts) are written to disk and
	// replicated together, up to MaxAppendEntries per round.
	rc.BatchApplyCh = true
	notify := make(chan bool, 8)
	rc.NotifyCh = notify
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}

	addr := string(trans.LocalAddr())
	if cfg.Bootstrap {
		exists, err := raft.HasExistingState(logs, bolt, snaps)
		if err != nil {
			return nil, fmt.Errorf("raft state: %w", err)
		}
		if !exists {
			lg.Info("bootstrapping a new cluster", "raft.addr", addr)
			err := raft.BootstrapCluster(rc, logs, bolt, snaps, trans, raft.Configuration{Servers: []raft.Server{
				{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(addr)},
			}})
			if err != nil {
				return nil, fmt.Errorf("raft bootstrap: %w", err)
			}
		}
	}

	r, err := raft.NewRaft(rc, (*fsm)(cfg.Store), logs, bolt, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	ok = true
	n := &Node{
		raft:   r,
		logs:   bolt,
		log:    lg,
		id:     cfg.ID,
		addr:   addr,
		store:  cfg.Store,
		leader: make(chan bool, 1),
		done:   make(chan struct{}),
	}
	go n.watchLeadership(notify)
	lg.Info("raft started", "raft.addr", addr, "store.index", cfg.Store.Index())
	return n, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// watchLeadership consumes raft's notifications (raft blocks until they are
// read), logs them and keeps the latest in n.leader.
func (n *Node) watchLeadership(notify <-chan bool) {
	for {
		select {
		case isLeader := <-notify:
			if isLeader {
				n.log.Info("became the leader")
			} else {
				n.log.Info("lost leadership")
			}
			setLatest(n.leader, isLeader)
		case <-n.done:
			return
		}
	}
}

// setLatest puts v in a one-slot channel, replacing an unread value, so
// that a slow reader sees the current state rather than a stale edge.
func setLatest(ch chan bool, v bool) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// Addr returns the address this node advertises for Raft.
func (n *Node) Addr() string { return n.addr }

// ID returns this node's Raft server id.
func (n *Node) ID() string { return n.id }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderCh delivers true when this node becomes the leader and false when it
// stops being it (and on Shutdown), for starting and stopping the leader's
// controllers. It holds only the latest value: a reader that was busy
// during a quick loss and regain sees true twice, so treat values as the
// state to be in, not as toggles. Have one reader; it should call Barrier
// after a true before trusting the store.
func (n *Node) LeaderCh() <-chan bool { return n.leader }

// Leader returns the current leader's Raft address and id, empty if none is
// known.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

func (n *Node) notLeaderError() error {
	addr, id := n.Leader()
	if addr == "" {
		return ErrNoLeader
	}
	return &NotLeaderError{LeaderAddr: addr, LeaderID: id}
}

// raftError turns raft's errors into this package's.
func (n *Node) raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeaderError()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

// wait waits for f like f.Error(), or for ctx. After ctx ends the
// operation may still complete.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueueTimeout is how long raft may take to accept an operation, from
// ctx's deadline (0: no limit).
func enqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// Propose commits b through Raft and returns the log index it was applied
// at, or the store's error for it (errors.Is works with store.ErrSequenceConflict
// and the others). On a follower it returns a *NotLeaderError (ErrNotLeader)
// or ErrNoLeader; forwarding is the API layer's job. If ctx ends first the
// batch may still be applied.
//
// Concurrent calls are the way to go fast: raft writes and replicates the
// entries that queue up meanwhile together.
func (n *Node) Propose(ctx context.Context, b *storev1.Batch) (uint64, error) {
	if !n.IsLeader() {
		return 0, n.notLeaderError()
	}
	data, err := encodeBatch(b)
	if err != nil {
		return 0, err
	}
	f := n.raft.Apply(data, enqueueTimeout(ctx))
	if err := wait(ctx, f); err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("propose: %w (the batch may still be applied)", err)
		}
		return 0, fmt.Errorf("propose: %w", n.raftError(err))
	}
	if err, _ := f.Response().(error); err != nil {
		return 0, err
	}
	return f.Index(), nil
}

// Barrier waits until every entry committed before the call is applied to
// the store: a new leader calls it before its controllers read the store.
func (n *Node) Barrier(ctx context.Context) error {
	if err := wait(ctx, n.raft.Barrier(enqueueTimeout(ctx))); err != nil {
		return fmt.Errorf("raft barrier: %w", n.raftError(err))
	}
	return nil
}

// AddVoter adds a manager to the Raft configuration (or changes its
// address); leader only.
func (n *Node) AddVoter(id, addr string) error {
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, opTimeout).Error(); err != nil {
		return fmt.Errorf("add raft voter %s at %s: %w", id, addr, n.raftError(err))
	}
	n.log.Info("added raft voter", "raft.peer.id", id, "raft.peer.addr", addr)
	return nil
}

// RemoveServer removes a manager from the Raft configuration; leader only.
func (n *Node) RemoveServer(id string) error {
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, opTimeout).Error(); err != nil {
		return fmt.Errorf("remove raft server %s: %w", id, n.raftError(err))
	}
	n.log.Info("removed raft server", "raft.peer.id", id)
	return nil
}

// Servers returns the Raft configuration: the managers and their addresses.
func (n *Node) Servers() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", n.raftError(err))
	}
	return f.Configuration().Servers, nil
}

// Shutdown stops the member (without handing leadership over: the others
// elect a new leader as if it had died), closes the transport and the log,
// and sends false on LeaderCh. It is safe to call more than once.
func (n *Node) Shutdown() error {
	n.stopOnce.Do(func() {
		err := n.raft.Shutdown().Error()
		close(n.done)
		if cerr := n.logs.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close raft log: %w", cerr)
		}
		setLatest(n.leader, false)
		n.stopErr = err
		n.log.Info("raft stopped", "store.index", n.store.Index())
	})
	return n.stopErr
}

// LeadershipTransfer hands leadership to another voter and waits for it.
func (n *Node) LeadershipTransfer() error {
	return n.raft.LeadershipTransfer().Error()
}
