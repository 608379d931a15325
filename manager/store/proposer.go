package store

import (
	"context"
	"fmt"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	"google.golang.org/protobuf/proto"
)

// Proposer is what writers need: it commits a batch and returns the index it
// was applied at, or the error Apply returned (errors.Is works with the
// sentinels). The Raft node implements it.
type Proposer interface {
	Propose(ctx context.Context, b *storev1.Batch) (uint64, error)
}

// NewLocalProposer returns a Proposer that applies batches to s directly,
// at the next index, for tests and single-process tools. Each batch is
// marshalled and unmarshalled as a Raft entry would be, so what passes here
// passes through Raft.
func NewLocalProposer(s *Store) Proposer { return &localProposer{s: s} }

type localProposer struct{ s *Store }

func (p *localProposer) Propose(ctx context.Context, b *storev1.Batch) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	data, err := proto.Marshal(b)
	if err != nil {
		return 0, fmt.Errorf("propose: marshal batch: %w", err)
	}
	owned := new(storev1.Batch)
	if err := proto.Unmarshal(data, owned); err != nil {
		return 0, fmt.Errorf("propose: unmarshal batch: %w", err)
	}
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.index + 1
	if err := s.applyLocked(owned, idx, true); err != nil {
		return 0, err
	}
	return idx, nil
}
