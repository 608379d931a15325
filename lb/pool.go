package lb

import (
	"sync/atomic"
	"time"
)

// backend is one task endpoint in one port's pool, with the counters the
// picker reads. A backend object lives from the SetBackends that adds it
// to the one that removes it (or a Drain); a task listed again later gets
// a fresh object, so the flags below only ever go one way.
type backend struct {
	Backend
	// active counts connections (TCP) or flows (UDP) that chose this
	// backend and have not ended, dials in progress included so that a
	// burst of new connections does not all see the same minimum. It is
	// the least-connections key.
	active atomic.Int64
	// dialing counts dials in progress; Drain waits for it to reach 0.
	dialing atomic.Int64
	// badUntil is the time (UnixNano) until which the picker prefers other
	// backends, after a dial was refused or timed out.
	badUntil atomic.Int64
	// gone is set once the backend has left the rotation. A connection
	// that picked it from an older snapshot sees it after raising dialing
	// and picks again; Drain sets it before reading dialing. Go's atomics
	// are sequentially consistent, so one of the two sees the other.
	gone atomic.Bool
}

// markBad puts the backend aside for d and reports whether it was in good
// standing before (so that only the first failure of a streak is logged).
func (be *backend) markBad(now time.Time, d time.Duration) bool {
	prev := be.badUntil.Swap(now.Add(d).UnixNano())
	return prev <= now.UnixNano()
}

// pool is the rotation of one port. The data path reads snapshot without a
// lock; writers (SetBackends, Drain, Unpublish) hold Balancer.mu.
type pool struct {
	snapshot atomic.Pointer[[]*backend]
	// next is where the next pick starts its scan: the round-robin part.
	next atomic.Uint64
	// members maps each listed endpoint to its state; guarded by
	// Balancer.mu.
	members map[Backend]*backend
}

func newPool() *pool {
	p := &pool{members: map[Backend]*backend{}}
	p.snapshot.Store(&[]*backend{})
	return p
}

// replace makes bs the rotation, keeping the counters of endpoints that
// stay, in the order given.
func (p *pool) replace(bs []Backend) {
	next := make([]*backend, 0, len(bs))
	members := make(map[Backend]*backend, len(bs))
	for _, b := range bs {
		if _, dup := members[b]; dup {
			continue
		}
		be := p.members[b]
		if be == nil {
			be = &backend{Backend: b}
		}
		members[b] = be
		next = append(next, be)
	}
	// Publish the new list before flagging the removed ones, so that a
	// connection that sees a flag and picks again loads a list without them.
	p.snapshot.Store(&next)
	for b, be := range p.members {
		if members[b] == nil {
			be.gone.Store(true)
		}
	}
	p.members = members
}

// drain removes every endpoint of the task and returns them.
func (p *pool) drain(taskID string) []*backend {
	var out []*backend
	for b, be := range p.members {
		if b.TaskID == taskID {
			out = append(out, be)
		}
	}
	if len(out) == 0 {
		return nil
	}
	cur := *p.snapshot.Load()
	next := make([]*backend, 0, len(cur))
	for _, be := range cur {
		if be.TaskID != taskID {
			next = append(next, be)
		}
	}
	p.snapshot.Store(&next)
	for _, be := range out {
		be.gone.Store(true)
		delete(p.members, be.Backend)
	}
	return out
}

// waitDials returns when no dial to any of bs is in progress, or after
// limit. Dials are bounded by the dial timeout, so the limit is only a
// guard; the common case is no dial at all and no wait.
func waitDials(bs []*backend, limit time.Duration) {
	deadline := time.Now().Add(limit)
	pause := 50 * time.Microsecond
	for _, be := range bs {
		for be.dialing.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(pause)
			if pause < 5*time.Millisecond {
				pause *= 2
			}
		}
	}
}

// acquire picks a backend for a new connection, skipping those in tried,
// and counts the connection and its dial on it; nil when none is left.
// The caller ends the dial with dialDone.
func (p *pool) acquire(now time.Time, tried []*backend) *backend {
	for {
		bs := *p.snapshot.Load()
		if len(bs) == 0 {
			return nil
		}
		be := choose(bs, int(p.next.Add(1)%uint64(len(bs))), now.UnixNano(), tried)
		if be == nil {
			return nil
		}
		be.active.Add(1)
		be.dialing.Add(1)
		if !be.gone.Load() {
			return be
		}
		// Left the rotation since the snapshot was read: the list
		// stored before the flag no longer has it.
		be.dialing.Add(-1)
		be.active.Add(-1)
	}
}

// dialDone ends a dial started by acquire; a failed dial also ends the
// connection's count and puts the backend aside for quarantine.
func (be *backend) dialDone(ok bool, now time.Time, quarantine time.Duration) (newlyBad bool) {
	be.dialing.Add(-1)
	if ok {
		// It answered, maybe as a last resort while put aside: back in
		// good standing.
		if be.badUntil.Load() != 0 {
			be.badUntil.Store(0)
		}
		return false
	}
	be.active.Add(-1)
	return be.markBad(now, quarantine)
}

// choose is the policy: among the backends not in tried and not put aside
// (badUntil after now), the one with the fewest active connections, ties
// going to the first found scanning from start (so equal backends take
// turns). If all untried backends are put aside, the one whose quarantine
// ends first: a dial that might work beats refusing the client.
func choose(bs []*backend, start int, now int64, tried []*backend) *backend {
	var best, bestBad *backend
	var bestActive, bestBadUntil int64
	n := len(bs)
	for i := range n {
		be := bs[(start+i)%n]
		if contains(tried, be) {
			continue
		}
		if until := be.badUntil.Load(); until > now {
			if bestBad == nil || until < bestBadUntil {
				bestBad, bestBadUntil = be, until
			}
			continue
		}
		if a := be.active.Load(); best == nil || a < bestActive {
			best, bestActive = be, a
		}
	}
	if best == nil {
		return bestBad
	}
	return best
}

func contains(bs []*backend, be *backend) bool {
	for _, b := range bs {
		if b == be {
			return true
		}
	}
	return false
}
