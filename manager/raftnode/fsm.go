package raftnode

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"github.com/shoal-dev/shoal/manager/store"
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	"google.golang.org/protobuf/proto"
)

// Log entries and snapshots start with a byte that says what follows, so a
// manager that meets a format it does not know stops instead of guessing.
const (
	// entryBatchV1 is a proto-marshalled storev1.Batch.
	entryBatchV1 byte = 1
	// snapshotV1 is the 8-byte big-endian index the snapshot was taken at
	// (raft does not tell FSM.Restore), then a proto-marshalled
	// storev1.Snapshot.
	snapshotV1 byte = 1
)

func encodeBatch(b *storev1.Batch) ([]byte, error) {
	data, err := proto.MarshalOptions{}.MarshalAppend([]byte{entryBatchV1}, b)
	if err != nil {
		return nil, fmt.Errorf("marshal batch: %w", err)
	}
	return data, nil
}

func decodeBatch(data []byte) (*storev1.Batch, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("empty log entry")
	}
	if data[0] != entryBatchV1 {
		return nil, fmt.Errorf("unknown log entry type %d (this build knows %d): a newer manager wrote it; upgrade this one", data[0], entryBatchV1)
	}
	b := new(storev1.Batch)
	if err := proto.Unmarshal(data[1:], b); err != nil {
		return nil, fmt.Errorf("unmarshal batch: %w", err)
	}
	return b, nil
}

// fsm is the store as raft sees it: Apply, Snapshot and Restore stay off
// the store's public type, as in hraftd.
type fsm store.Store

var _ raft.FSM = (*fsm)(nil)

func (f *fsm) store() *store.Store { return (*store.Store)(f) }

// Apply applies one committed entry and returns the store's error, which
// Propose hands back to the writer on the leader (followers drop it: the
// same batch fails the same way everywhere).
//
// An entry it cannot decode panics. Every replica must apply every entry
// alike; carrying on past one this build does not understand would leave
// this replica's state silently different from the others'. Stopping is
// the loud failure an operator can fix (by upgrading this manager).
func (f *fsm) Apply(l *raft.Log) any {
	b, err := decodeBatch(l.Data)
	if err != nil {
		panic(fmt.Sprintf("raft entry %d: %v", l.Index, err))
	}
	if err := f.store().ApplyOwned(b, l.Index); err != nil {
		f.store().Logger.Debug("batch rejected", "raft.index", l.Index, "error", err)
		return err
	}
	return nil
}

// Snapshot captures the store quickly (the store's objects are immutable,
// so it copies pointers, not objects); Persist marshals and writes beside
// Apply.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	snap, idx := f.store().SnapshotShared()
	return &fsmSnapshot{snap: snap, index: idx}, nil
}

// Restore replaces the store with a persisted snapshot.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	snap, idx, err := decodeSnapshot(data)
	if err != nil {
		return err
	}
	return f.store().Restore(snap, idx)
}

type fsmSnapshot struct {
	snap  *storev1.Snapshot
	index uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	head := make([]byte, 9, 9+proto.Size(s.snap))
	head[0] = snapshotV1
	binary.BigEndian.PutUint64(head[1:], s.index)
	data, err := proto.MarshalOptions{}.MarshalAppend(head, s.snap)
	if err != nil {
		return fmt.Errorf("marshal snapshot: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

func (s *fsmSnapshot) Release() {}

func decodeSnapshot(data []byte) (*storev1.Snapshot, uint64, error) {
	if len(data) < 9 {
		return nil, 0, fmt.Errorf("snapshot of %d bytes is truncated", len(data))
	}
	if data[0] != snapshotV1 {
		return nil, 0, fmt.Errorf("unknown snapshot format %d (this build knows %d)", data[0], snapshotV1)
	}
	idx := binary.BigEndian.Uint64(data[1:9])
	snap := new(storev1.Snapshot)
	if err := proto.Unmarshal(data[9:], snap); err != nil {
		return nil, 0, fmt.Errorf("unmarshal snapshot: %w", err)
	}
	return snap, idx, nil
}
