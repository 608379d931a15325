package store

import (
	"context"
	"fmt"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	"google.golang.org/protobuf/proto"
)

// Event is one committed change. Object is the object after the change (for
// a remove, the object removed); Old is the object before it (nil for a
// create). Both are the watcher's own copies. Index is the Raft index of the
// batch; the events of one batch share it and come in batch order.
//
// Err is set only on the last event of a watch the store ended, ErrWatchDropped
// with the reason (the watcher fell behind, or the store was restored from a
// snapshot); its Kind is KIND_UNKNOWN and Object is nil. The consumer must
// re-list (ViewAndWatch) since it has missed changes.
type Event struct {
	Kind   storev1.StoreAction_Kind
	Object proto.Message
	Old    proto.Message
	Index  uint64
	Err    error
}

// watcher is one Watch call. The store sends to in without blocking, under
// watchMu; a goroutine copies events from in to the consumer's channel, so
// that copying and a slow consumer stay off Apply's path.
type watcher struct {
	in  chan Event
	err error // why the store closed in; written before close(in)
}

// Watch returns the changes committed after the call, batch by batch. The
// channel is closed when ctx ends.
//
// A watcher that lags more than WatchBuffer events behind must not hold up
// Apply, so the store drops it: its channel delivers the events it had
// buffered, then one event whose Err wraps ErrWatchDropped, and is closed.
// So a channel closed while ctx is still live always means "re-list". A
// consumer that stops reading must cancel ctx, or the goroutine that feeds
// its channel stays blocked.
func (s *Store) Watch(ctx context.Context) <-chan Event {
	return s.watch(ctx)
}

// ViewAndWatch runs fn like View and starts a watch in the same instant, so
// that the watch delivers exactly the changes after what fn saw: the way a
// controller lists its objects and then follows them without a gap.
func (s *Store) ViewAndWatch(ctx context.Context, fn func(tx ReadTx)) <-chan Event {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ch := s.watch(ctx)
	fn(readTx{s.st})
	return ch
}

func (s *Store) watch(ctx context.Context) <-chan Event {
	size := s.WatchBuffer
	if size <= 0 {
		size = DefaultWatchBuffer
	}
	w := &watcher{in: make(chan Event, size)}
	out := make(chan Event)
	s.watchMu.Lock()
	s.watchers[w] = struct{}{}
	s.watchMu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		s.dropLocked(w, nil)
	})
	go func() {
		defer close(out)
		// Deregister here too: stop may win against the AfterFunc, and
		// then only this leaves the store without a dead watcher.
		defer func() {
			stop()
			s.watchMu.Lock()
			s.dropLocked(w, nil)
			s.watchMu.Unlock()
		}()
		for ev := range w.in {
			if ctx.Err() != nil {
				return
			}
			select {
			case out <- ev.copy():
			case <-ctx.Done():
				return
			}
		}
		// in is closed: by ctx's end, or by the store, which set w.err.
		if w.err != nil && ctx.Err() == nil {
			select {
			case out <- Event{Err: w.err}:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

func (ev Event) copy() Event {
	c := ev
	if ev.Object != nil {
		c.Object = proto.Clone(ev.Object)
	}
	switch {
	case ev.Old == nil:
	case ev.Old == ev.Object: // a remove: one copy for both
		c.Old = c.Object
	default:
		c.Old = proto.Clone(ev.Old)
	}
	return c
}

// publish hands a committed batch's events to every watcher; the caller
// holds mu, so batches reach watchers in commit order.
func (s *Store) publish(events []Event) {
	if len(events) == 0 {
		return
	}
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.watchers {
		for _, ev := range events {
			select {
			case w.in <- ev:
				continue
			default:
			}
			err := fmt.Errorf("%w: the watcher fell more than %d events behind at index %d", ErrWatchDropped, cap(w.in), ev.Index)
			s.Logger.Warn("dropping a slow watcher; it must re-list", "store.index", ev.Index, "watch.buffer", cap(w.in))
			s.dropLocked(w, err)
			break
		}
	}
}

// dropAll ends every watch with err; the caller holds mu.
func (s *Store) dropAll(err error) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	for w := range s.watchers {
		s.dropLocked(w, err)
	}
}

// dropLocked ends w once; the caller holds watchMu. err is what its last
// event reports; nil when its ctx ended, since then nobody is listening.
func (s *Store) dropLocked(w *watcher, err error) {
	if _, ok := s.watchers[w]; !ok {
		return
	}
	delete(s.watchers, w)
	w.err = err
	close(w.in)
}
