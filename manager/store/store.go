// Package store is the state the managers replicate through Raft: typed
// tables of cluster objects (one file per table), versioned by the Raft
// index of their last change, with secondary indexes and watch events.
//
// Writes come only through Apply, one Raft entry (a storev1.Batch) at a
// time, all-or-nothing. Writers build batches with NewBatch on the leader and
// hand them to a Proposer (the Raft node, or NewLocalProposer in tests).
// Readers use View and the typed helpers (GetTask, FindTasks(tx,
// ByServiceID(id)), ...), and Watch for changes.
//
// Everything the store hands out (from View, Watch and Snapshot) is a copy:
// callers may modify it, typically to put it in the next batch. The one
// exception is SnapshotShared, for the Raft FSM. Inside, stored objects are
// never modified in place, only replaced, which is what lets snapshots
// share them.
package store

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
)

// SnapshotVersion is the storev1.Snapshot format this store writes and
// reads; Restore refuses others.
const SnapshotVersion = 1

// DefaultWatchBuffer is how many events a watcher may lag behind before the
// store drops it.
const DefaultWatchBuffer = 4096

// Store holds the replicated state. Its zero value is not usable; call New.
type Store struct {
	// Now is the clock writers on the leader stamp batches with (see
	// NewBatch); Apply never reads it. Defaults to time.Now.
	Now func() time.Time
	// Logger defaults to slog.Default with component=store.
	Logger *slog.Logger
	// WatchBuffer is how many events a watcher may lag behind before it is
	// dropped; defaults to DefaultWatchBuffer. Read when Watch is called.
	WatchBuffer int

	// mu guards st and index: Apply and Restore hold it to write, View to
	// read, so a view sees whole batches only.
	mu    sync.RWMutex
	st    *state
	index uint64

	// watchMu guards watchers. Lock order: mu, then watchMu.
	watchMu  sync.Mutex
	watchers map[*watcher]struct{}
}

// state is the set of tables.
type state struct {
	clusters *table[*typesv1.Cluster]
	nodes    *table[*typesv1.Node]
	services *table[*typesv1.Service]
	tasks    *table[*typesv1.Task]
	networks *table[*typesv1.Network]
	secrets  *table[*typesv1.Secret]
	configs  *table[*typesv1.Config]
}

func newState() *state {
	return &state{
		clusters: newTable(clusterSchema),
		nodes:    newTable(nodeSchema),
		services: newTable(serviceSchema),
		tasks:    newTable(taskSchema),
		networks: newTable(networkSchema),
		secrets:  newTable(secretSchema),
		configs:  newTable(configSchema),
	}
}

// New returns an empty store at index 0.
func New() *Store {
	return &Store{
		Now:      time.Now,
		Logger:   slog.Default().With("component", "store"),
		st:       newState(),
		watchers: map[*watcher]struct{}{},
	}
}

// ReadTx is a consistent read of the store, given to View's function. Only
// the store makes them; tests use a real Store, which is cheap.
type ReadTx interface {
	state() *state
}

type readTx struct{ st *state }

func (tx readTx) state() *state { return tx.st }

// View runs fn with a consistent snapshot of every table: no batch is
// applied while fn runs. The objects the typed helpers return are copies.
// fn must be quick and must not call View, Apply or a Proposer: Apply waits
// for fn to return, and a nested View could wait behind that Apply.
func (s *Store) View(fn func(tx ReadTx)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn(readTx{s.st})
}

// Index returns the Raft index of the last entry applied (or of the
// snapshot restored), whether or not that entry's batch was accepted.
func (s *Store) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// NewBatch returns an empty batch stamped with s.Now().
func (s *Store) NewBatch() *Batch { return NewBatch(s.Now()) }

// Apply applies one Raft entry, at log index idx, all-or-nothing: either
// every action succeeds or none changes anything and the error names the
// first failing action's object (ErrSequenceConflict, ErrExist,
// ErrNotExist, ErrNameConflict, ErrInvalid). Created and updated objects get
// meta.version = idx; their times are the ones the batch carries.
//
// The index advances even when the batch is rejected: the entry was applied,
// as a no-op, on every replica alike. idx must be above Index.
func (s *Store) Apply(b *storev1.Batch, idx uint64) error {
	return s.apply(b, idx, false)
}

// ApplyOwned is Apply for a batch that nobody else holds, such as one just
// unmarshalled from a Raft entry: the store keeps the batch's objects rather
// than copying them, which halves the FSM's work for status bursts. The
// caller must not touch b afterwards.
func (s *Store) ApplyOwned(b *storev1.Batch, idx uint64) error {
	return s.apply(b, idx, true)
}

func (s *Store) apply(b *storev1.Batch, idx uint64, owned bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked(b, idx, owned)
}

func (s *Store) applyLocked(b *storev1.Batch, idx uint64, owned bool) error {
	if idx <= s.index {
		return errorf(ErrInvalid, "apply entry %d: the store is already at index %d", idx, s.index)
	}
	s.index = idx
	tx := newTxn(s.st, idx, owned)
	for _, a := range b.GetActions() {
		if err := tx.stage(a); err != nil {
			return err
		}
	}
	if err := tx.checkNames(); err != nil {
		return err
	}
	tx.commit()
	s.publish(tx.events)
	return nil
}

// Snapshot returns a copy of the whole store, every table ordered by id, and
// the index it is at.
func (s *Store) Snapshot() *storev1.Snapshot {
	snap, _ := s.SnapshotShared()
	return proto.CloneOf(snap)
}

// SnapshotShared is Snapshot without the copy, for the Raft FSM: the
// objects are the store's own, which the store never modifies (a change
// replaces them), so the snapshot can be marshalled while Apply goes on.
// The caller must not modify it. It also returns the index it was taken at.
func (s *Store) SnapshotShared() (*storev1.Snapshot, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.st
	return &storev1.Snapshot{
		Version:  SnapshotVersion,
		Clusters: st.clusters.sorted(),
		Nodes:    st.nodes.sorted(),
		Services: st.services.sorted(),
		Tasks:    st.tasks.sorted(),
		Networks: st.networks.sorted(),
		Secrets:  st.secrets.sorted(),
		Configs:  st.configs.sorted(),
	}, s.index
}

// Restore replaces the whole store with snap, at index idx, rebuilding every
// index. On error the store is unchanged. Watchers are dropped (their last
// event carries ErrWatchDropped), since what changed cannot be told as
// events: they re-list and watch again.
func (s *Store) Restore(snap *storev1.Snapshot, idx uint64) error {
	if v := snap.GetVersion(); v != SnapshotVersion {
		return errorf(ErrInvalid, "restore snapshot: unknown format version %d (this build reads %d)", v, SnapshotVersion)
	}
	st := newState()
	errs := []error{
		load(st.clusters, snap.GetClusters()),
		load(st.nodes, snap.GetNodes()),
		load(st.services, snap.GetServices()),
		load(st.tasks, snap.GetTasks()),
		load(st.networks, snap.GetNetworks()),
		load(st.secrets, snap.GetSecrets()),
		load(st.configs, snap.GetConfigs()),
	}
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("restore snapshot: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	s.index = idx
	s.dropAll(fmt.Errorf("%w: the store was restored from a snapshot at index %d", ErrWatchDropped, idx))
	return nil
}

func load[T object](t *table[T], objs []T) error {
	sc := t.schema
	for _, o := range objs {
		if isNil(o) || o.GetId() == "" {
			return errorf(ErrInvalid, "a %s without an id", sc.kind)
		}
		if _, dup := t.objs[o.GetId()]; dup {
			return errorf(ErrInvalid, "%s %s appears twice", sc.kind, o.GetId())
		}
		if t.names != nil {
			if n := sc.name(o); n != "" {
				if _, dup := t.names[strings.ToLower(n)]; dup {
					return errorf(ErrNameConflict, "%s name %q is already in use", sc.kind, n)
				}
			}
		}
		t.put(proto.CloneOf(o))
	}
	return nil
}
