package logs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadFilters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	// Entries 0..99 at t0+i ms, over several rotated files.
	w := newWriter(t, path, Options{MaxSize: 2 << 10, MaxFiles: 100})
	const n = 100
	for i := range n {
		if err := w.WriteEntry(Entry{Log: seqLine(i), Stream: "stdout", Time: t0.Add(time.Duration(i) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(dirNames(t, filepath.Dir(path))) < 4 {
		t.Fatal("want entries spread over several files")
	}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	tests := []struct {
		name     string
		opts     ReadOptions
		from, to int // want entries [from, to)
	}{
		{name: "all", opts: ReadOptions{Tail: -1}, from: 0, to: n},
		{name: "tail 0", opts: ReadOptions{Tail: 0}, from: 0, to: 0},
		{name: "tail 1", opts: ReadOptions{Tail: 1}, from: n - 1, to: n},
		{name: "tail within newest file", opts: ReadOptions{Tail: 3}, from: n - 3, to: n},
		{name: "tail across files", opts: ReadOptions{Tail: 60}, from: n - 60, to: n},
		{name: "tail all exactly", opts: ReadOptions{Tail: n}, from: 0, to: n},
		{name: "tail more than all", opts: ReadOptions{Tail: 10 * n}, from: 0, to: n},
		{name: "since inclusive", opts: ReadOptions{Tail: -1, Since: at(40)}, from: 40, to: n},
		{name: "since between", opts: ReadOptions{Tail: -1, Since: at(40).Add(time.Microsecond)}, from: 41, to: n},
		{name: "until inclusive", opts: ReadOptions{Tail: -1, Until: at(10)}, from: 0, to: 11},
		{name: "since and until", opts: ReadOptions{Tail: -1, Since: at(20), Until: at(29)}, from: 20, to: 30},
		{name: "since after all", opts: ReadOptions{Tail: -1, Since: at(n)}, from: 0, to: 0},
		{name: "until before all", opts: ReadOptions{Tail: -1, Until: t0.Add(-time.Nanosecond)}, from: 0, to: 0},
		{name: "tail of until", opts: ReadOptions{Tail: 5, Until: at(49)}, from: 45, to: 50},
		{name: "tail of since", opts: ReadOptions{Tail: 5, Since: at(97)}, from: 97, to: n},
		{name: "tail of window across files", opts: ReadOptions{Tail: 30, Since: at(10), Until: at(69)}, from: 40, to: 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, path, tt.opts)
			if tt.to == tt.from {
				if len(got) != 0 {
					t.Fatalf("got %d entries, want none (first %q)", len(got), got[0].Log)
				}
				return
			}
			checkSeq(t, got, tt.from, tt.to)
		})
	}
}

func TestReadSkipsBadAndUnfinishedLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{})
	write := func(i int) {
		if err := w.WriteEntry(Entry{Log: seqLine(i), Stream: "stdout", Time: t0.Add(time.Duration(i) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	appendRaw := func(s string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	appendRaw("{\"log\":\"torn\n")
	appendRaw("\n")
	write(1)
	write(2)
	appendRaw(`{"log":"being written","str`) // no newline yet
	for _, tail := range []int{-1, 2, 3} {
		got := readAll(t, path, ReadOptions{Tail: tail})
		want := []int{0, 1, 2}
		if tail >= 0 {
			want = want[len(want)-min(tail, 3):]
		}
		checkSeq(t, got, want[0], want[len(want)-1]+1)
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	err := Read(t.Context(), filepath.Join(dir, "missing"), ReadOptions{Tail: -1}, func(Entry) error { return nil })
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing log = %v, want fs.ErrNotExist", err)
	}

	path := filepath.Join(dir, "log")
	w := newWriter(t, path, Options{})
	writeSeq(t, w, 0, 10_000)
	stop := errors.New("stop")
	calls := 0
	err = Read(t.Context(), path, ReadOptions{Tail: -1}, func(Entry) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 3 {
		t.Errorf("Read = %v after %d calls, want fn's error after 3", err, calls)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Read(ctx, path, ReadOptions{Tail: -1}, func(Entry) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a done ctx = %v, want context.Canceled", err)
	}
}

func TestScanBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var lines []string
	// Lengths around and beyond scanChunk, so lines straddle chunks and
	// some need the buffer to grow.
	for i := range 300 {
		n := rng.IntN(200)
		switch i % 50 {
		case 7:
			n = scanChunk - 1
		case 8:
			n = scanChunk
		case 9:
			n = 3*scanChunk + 17
		}
		lines = append(lines, fmt.Sprintf("%d:%s\n", i, strings.Repeat("a", n)))
	}
	content := strings.Join(lines, "")
	tests := []struct {
		name    string
		content string
		want    []string
	}{
		{name: "empty", content: "", want: nil},
		{name: "one line", content: "abc\n", want: []string{"abc\n"}},
		{name: "unfinished only", content: "abc", want: nil},
		{name: "unfinished last", content: "a\nb\nc", want: []string{"a\n", "b\n"}},
		{name: "empty lines", content: "\n\nx\n", want: []string{"\n", "\n", "x\n"}},
		{name: "many", content: content, want: lines},
		{name: "many unfinished", content: content + strings.Repeat("u", scanChunk+5), want: lines},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			var offs []int64
			err := scanBack(strings.NewReader(tt.content), int64(len(tt.content)), func(line []byte, off int64) bool {
				got = append(got, string(line))
				offs = append(offs, off)
				return true
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d lines, want %d", len(got), len(tt.want))
			}
			off := int64(len(strings.Join(tt.want, "")))
			for i := range got {
				w := tt.want[len(tt.want)-1-i]
				off -= int64(len(w))
				if got[i] != w || offs[i] != off {
					t.Fatalf("line %d from the end = %.20q at %d, want %.20q at %d", i, got[i], offs[i], w, off)
				}
			}
		})
	}
}

func TestFollow(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		batch    int // entries written before waiting for the follower
		batches  int
		minFiles int // rotations the writes must have caused
	}{
		// Small batches, waited for: each rotation happens while the
		// follower is somewhere in the file, including MaxFiles 1 where
		// rotation deletes the file it reads.
		{name: "rotate every few batches", opts: Options{MaxSize: 1 << 10, MaxFiles: 2}, batch: 3, batches: 40, minFiles: 5},
		{name: "single file", opts: Options{MaxSize: 1 << 10, MaxFiles: 1}, batch: 3, batches: 40, minFiles: 5},
		// One burst of several rotations between two polls, fewer than
		// MaxFiles-1, so the follower must walk the rotated files.
		{name: "burst of rotations", opts: Options{MaxSize: 1 << 10, MaxFiles: 6}, batch: 40, batches: 2, minFiles: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			w := newWriter(t, path, tt.opts)
			// Some entries exist before the follower starts; with Tail -1
			// it must see them and all later ones exactly once.
			n := writeSeq(t, w, 0, 300)
			f := startFollow(t, path, ReadOptions{Follow: true, Tail: -1})
			f.waitFor(t, n)
			written := 0
			for range tt.batches {
				for range tt.batch {
					e := Entry{Log: seqLine(n), Stream: "stdout", Time: t0.Add(time.Duration(n) * time.Millisecond)}
					if err := w.WriteEntry(e); err != nil {
						t.Fatal(err)
					}
					written += len(appendEntry(nil, e.Log, e.Stream, e.Time))
					n++
				}
				f.waitFor(t, n)
			}
			if written < tt.minFiles*int(tt.opts.MaxSize) {
				t.Fatalf("wrote %d bytes, too few for %d rotations", written, tt.minFiles)
			}
			checkSeq(t, f.stop(t), 0, n)
		})
	}
}

func TestFollowTailZeroSeesOnlyNewEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{MaxSize: 2 << 10, MaxFiles: 3})
	old := writeSeq(t, w, 0, 5000)
	f := startFollow(t, path, ReadOptions{Follow: true, Tail: 0})
	// Which entries are new depends on when Read opened the file, so
	// write until one arrives; from there on none may be missed.
	n := old
	deadline := time.Now().Add(10 * time.Second)
	for f.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("follower received nothing")
		}
		writeSeq(t, w, n, 1)
		n++
		f.waitUpTo(100 * time.Millisecond)
	}
	var from int
	if _, err := fmt.Sscanf(f.got[0].Log, "seq %d", &from); err != nil {
		t.Fatal(err)
	}
	if from < old {
		t.Fatalf("first entry %d was written before the follower started (entries < %d)", from, old)
	}
	n = writeSeq(t, w, n, 5000) // a few rotations more
	f.waitFor(t, n-from)
	checkSeq(t, f.stop(t), from, n)
}

func TestFollowWaitsForTheLog(t *testing.T) {
	for _, tail := range []int{-1, 0} {
		t.Run(fmt.Sprint("tail ", tail), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			waiting := make(chan struct{}, 100)
			testHookWaiting = func(p string) {
				if p == path {
					select {
					case waiting <- struct{}{}:
					default:
					}
				}
			}
			t.Cleanup(func() { testHookWaiting = nil })
			f := startFollow(t, path, ReadOptions{Follow: true, Tail: tail})
			// Still waiting after two looks: not failed on the missing
			// file, and (for Tail 0) past its first look, so that all
			// entries of the log created next are new to it.
			for range 2 {
				select {
				case <-f.done:
					t.Fatalf("Read returned %v while the log did not exist yet", f.err)
				case <-waiting:
				case <-time.After(10 * time.Second):
					t.Fatal("the follower never looked for the log")
				}
			}
			w := newWriter(t, path, Options{MaxSize: 1 << 10, MaxFiles: 10})
			n := writeSeq(t, w, 0, 2000)
			f.waitFor(t, n)
			checkSeq(t, f.stop(t), 0, n)
		})
	}
}

func TestFollowUntil(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{})
	n := writeSeq(t, w, 0, 1000)
	done := make(chan error, 1)
	var got []Entry
	go func() {
		done <- Read(t.Context(), path, ReadOptions{Follow: true, Tail: -1, Until: time.Now().Add(100 * time.Millisecond)},
			func(e Entry) error { got = append(got, e); return nil })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read with Follow did not return after Until passed")
	}
	checkSeq(t, got, 0, n)
}

// follower runs Read with Follow in a goroutine and collects entries.
type follower struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when Read returned
	err     error         // what Read returned, once done is closed
	entries chan Entry
	got     []Entry
}

func startFollow(t *testing.T, path string, opts ReadOptions) *follower {
	ctx, cancel := context.WithCancel(t.Context())
	f := &follower{cancel: cancel, done: make(chan struct{}), entries: make(chan Entry, 1000)}
	go func() {
		defer close(f.done)
		f.err = Read(ctx, path, opts, func(e Entry) error {
			select {
			case f.entries <- e:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

func (f *follower) waitUpTo(d time.Duration) {
	timeout := time.After(d)
	for {
		select {
		case e := <-f.entries:
			f.got = append(f.got, e)
		case <-timeout:
			return
		}
	}
}

// waitFor waits until n entries arrived, with a deadline.
func (f *follower) waitFor(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for len(f.got) < n {
		select {
		case e := <-f.entries:
			f.got = append(f.got, e)
		case <-f.done:
			t.Fatalf("Read returned %v after %d of %d entries", f.err, len(f.got), n)
		case <-timeout:
			t.Fatalf("follower got %d entries, want %d; last %q", len(f.got), n, lastLog(f.got))
		}
	}
}

func (f *follower) count() int { return len(f.got) }

// stop cancels the follower, checks that Read returns nil, and returns
// everything received, including anything extra that must not be there.
func (f *follower) stop(t *testing.T) []Entry {
	t.Helper()
	f.cancel()
	select {
	case <-f.done:
		if f.err != nil {
			t.Errorf("Read with Follow returned %v after cancel, want nil", f.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read with Follow did not return after cancel")
	}
	close(f.entries)
	for e := range f.entries {
		f.got = append(f.got, e)
	}
	return f.got
}

func lastLog(es []Entry) string {
	if len(es) == 0 {
		return ""
	}
	return es[len(es)-1].Log
}

func TestReadWhileRotating(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{MaxSize: 1 << 10, MaxFiles: 4})
	n := writeSeq(t, w, 0, 4000)
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		// Rotates every few entries while Read opens and reads the files.
		for i := n; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			e := Entry{Log: seqLine(i), Stream: "stdout", Time: t0.Add(time.Duration(i) * time.Millisecond)}
			if err := w.WriteEntry(e); err != nil {
				writerDone <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-writerDone; err != nil {
			t.Error(err)
		}
	}()
	for range 300 {
		got := readAll(t, path, ReadOptions{Tail: -1})
		var from int
		if _, err := fmt.Sscanf(got[0].Log, "seq %d", &from); err != nil {
			t.Fatal(err)
		}
		// A snapshot of consecutive files: no gap, no repeat.
		checkSeq(t, got, from, from+len(got))
	}
}

func TestFollowFallingBehind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{MaxSize: 1 << 10, MaxFiles: 2})
	n := writeSeq(t, w, 0, 500)
	f := startFollow(t, path, ReadOptions{Follow: true, Tail: -1})
	f.waitFor(t, n)
	// Far more rotations than MaxFiles within one poll: the follower loses
	// the files deleted before it looked, but must go on with the oldest
	// one left, in order, up to the last entry.
	n = writeSeq(t, w, n, 50<<10)
	deadline := time.After(10 * time.Second)
	for lastLog(f.got) != seqLine(n-1) {
		select {
		case e := <-f.entries:
			f.got = append(f.got, e)
		case <-deadline:
			t.Fatalf("follower stuck at %q, want up to entry %d", lastLog(f.got), n-1)
		}
	}
	prev := -1
	for _, e := range f.stop(t) {
		var i int
		if _, err := fmt.Sscanf(e.Log, "seq %d", &i); err != nil {
			t.Fatal(err)
		}
		if i <= prev {
			t.Fatalf("entry %d after %d: repeated or out of order", i, prev)
		}
		prev = i
	}
}
