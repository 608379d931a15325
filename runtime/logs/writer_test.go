package logs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

var t0 = time.Date(2026, 11, 28, 1, 2, 3, 123456789, time.UTC)

func TestEncodingMatchesEncodingJSON(t *testing.T) {
	logs := []string{
		"", "hello\n", `quote " backslash \ slash /`, "<b>&amp;</b>",
		"\x00\x01\b\f\n\r\t\x1f\x7f", "héllo wörld ✓ 😀", "\u2028\u2029",
		"bad utf8 \xff\xfe \xc3", "tail cut \xe2\x9c",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		logs = append(logs, string(b))
	}
	times := []time.Time{t0, t0.Truncate(time.Second), time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)}
	for i, log := range logs {
		tm := times[i%len(times)]
		want, err := json.Marshal(Entry{Log: log, Stream: "stdout", Time: tm})
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, '\n')
		if got := appendEntry(nil, log, "stdout", tm); !bytes.Equal(got, want) {
			t.Errorf("string %q:\n got %s\nwant %s", log, got, want)
		}
		if got := appendEntry(nil, []byte(log), "stdout", tm); !bytes.Equal(got, want) {
			t.Errorf("[]byte %q:\n got %s\nwant %s", log, got, want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		in      Entry
		wantLog string // if different from in.Log
	}{
		{name: "plain", in: Entry{Log: "hello\n", Stream: "stdout", Time: t0}},
		{name: "stderr", in: Entry{Log: "oops\n", Stream: "stderr", Time: t0.Add(time.Second)}},
		{name: "empty", in: Entry{Log: "", Stream: "stdout", Time: t0}},
		{name: "escapes", in: Entry{Log: "\"q\" \\ <a>&\t\r\x00\n", Stream: "stdout", Time: t0}},
		{name: "unicode", in: Entry{Log: "héllo ✓ 😀 \u2028\n", Stream: "stdout", Time: t0}},
		{name: "invalid utf8", in: Entry{Log: "a\xffb\n", Stream: "stdout", Time: t0}, wantLog: "a\ufffdb\n"},
		{name: "local time", in: Entry{Log: "x\n", Stream: "stdout", Time: t0.In(time.FixedZone("X", 3600))}},
		{name: "long", in: Entry{Log: strings.Repeat("z", 100_000) + "\n", Stream: "stdout", Time: t0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			w := newWriter(t, path, Options{})
			if err := w.WriteEntry(tt.in); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, path, ReadOptions{Tail: -1})
			want := tt.in
			if tt.wantLog != "" {
				want.Log = tt.wantLog
			}
			if len(got) != 1 || !sameEntry(got[0], want) {
				t.Fatalf("read %+v, want [%+v]", got, want)
			}
			if got[0].Time.Location() != time.UTC {
				t.Errorf("time %v not stored in UTC", got[0].Time)
			}
		})
	}
}

func TestCopyStream(t *testing.T) {
	long := strings.Repeat("x", 40_000)
	exact := strings.Repeat("e", MaxLineSize)
	// 'é' is two bytes; it would straddle the 16 KiB boundary.
	straddle := strings.Repeat("s", MaxLineSize-1) + "é"
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "empty", in: "", want: nil},
		{name: "lines", in: "a\nbb\n\nccc\n", want: []string{"a\n", "bb\n", "\n", "ccc\n"}},
		{name: "last line without newline", in: "a\nrest", want: []string{"a\n", "rest"}},
		{name: "only partial", in: "rest", want: []string{"rest"}},
		{name: "long line split at 16 KiB", in: long + "\nnext\n",
			want: []string{long[:MaxLineSize], long[MaxLineSize : 2*MaxLineSize], long[2*MaxLineSize:] + "\n", "next\n"}},
		{name: "line of exactly 16 KiB", in: exact + "\n", want: []string{exact, "\n"}},
		{name: "long last line without newline", in: long, want: []string{long[:MaxLineSize], long[MaxLineSize : 2*MaxLineSize], long[2*MaxLineSize:]}},
		{name: "utf8 kept whole at split", in: straddle + "\n", want: []string{straddle[:MaxLineSize-1], "é\n"}},
	}
	readers := map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"half":     func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
	}
	for _, tt := range tests {
		for rname, mk := range readers {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "log")
				w := newWriter(t, path, Options{})
				before := time.Now()
				if err := w.CopyStream("stderr", mk(tt.in)); err != nil {
					t.Fatal(err)
				}
				after := time.Now()
				got := readAll(t, path, ReadOptions{Tail: -1})
				var logs []string
				for _, e := range got {
					logs = append(logs, e.Log)
					if e.Stream != "stderr" {
						t.Errorf("stream %q, want stderr", e.Stream)
					}
					if e.Time.Before(before) || e.Time.After(after) || e.Time.Location() != time.UTC {
						t.Errorf("time %v not the UTC time of reading, between %v and %v", e.Time, before, after)
					}
				}
				if strings.Join(logs, "|") != strings.Join(tt.want, "|") || len(logs) != len(tt.want) {
					t.Errorf("entries %q, want %q", abbrev(logs), abbrev(tt.want))
				}
			})
		}
	}
}

func TestCopyStreamDrainsAfterWriteError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{})
	w.Close()
	r := bytes.NewReader(bytes.Repeat([]byte("line\n"), 10_000))
	err := w.CopyStream("stdout", r)
	if !errors.Is(err, os.ErrClosed) {
		t.Errorf("CopyStream = %v, want the write error", err)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left unread: the container would block on a full pipe", r.Len())
	}
}

func TestCopyStreamReadError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w := newWriter(t, path, Options{})
	boom := errors.New("boom")
	err := w.CopyStream("stdout", io.MultiReader(strings.NewReader("a\npart"), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Fatalf("CopyStream = %v, want %v", err, boom)
	}
	if got := logsOf(readAll(t, path, ReadOptions{Tail: -1})); got != "a\n|part" {
		t.Errorf("entries %q, want what was read before the error", got)
	}
}

func TestRotation(t *testing.T) {
	tests := []struct {
		maxSize  int64
		maxFiles int
		total    int
	}{
		{maxSize: 64 << 10, maxFiles: 3, total: 1 << 20},
		{maxSize: 64 << 10, maxFiles: 1, total: 1 << 20},
		{maxSize: 64 << 10, maxFiles: 2, total: 200 << 10},
		{maxSize: 4 << 10, maxFiles: 7, total: 100 << 10},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("size=%d,files=%d", tt.maxSize, tt.maxFiles), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "log")
			w := newWriter(t, path, Options{MaxSize: tt.maxSize, MaxFiles: tt.maxFiles})
			n := writeSeq(t, w, 0, tt.total)
			var want []string
			for i := range tt.maxFiles {
				want = append(want, filepath.Base(rotatedName(path, i)))
			}
			if got := dirNames(t, dir); strings.Join(got, " ") != strings.Join(sorted(want), " ") {
				t.Fatalf("files %v, want %v", got, sorted(want))
			}
			for _, name := range want {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() > tt.maxSize || fi.Size() == 0 {
					t.Errorf("%s has %d bytes, want 1..%d", name, fi.Size(), tt.maxSize)
				}
			}
			// The newest entries are kept, without gap, up to the last one.
			got := readAll(t, path, ReadOptions{Tail: -1})
			checkSeq(t, got, -1, n)
		})
	}
}

func TestNewWriterAppendsAndDropsStaleFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	w := newWriter(t, path, Options{MaxSize: 4 << 10, MaxFiles: 5})
	n := writeSeq(t, w, 0, 18<<10)
	w.Close()
	if got := strings.Join(dirNames(t, dir), " "); got != "log log.1 log.2 log.3 log.4" {
		t.Fatalf("files %q after the first writer", got)
	}
	w = newWriter(t, path, Options{MaxSize: 4 << 10, MaxFiles: 3})
	if got := strings.Join(dirNames(t, dir), " "); got != "log log.1 log.2" {
		t.Errorf("files %q, want log.3 and log.4 of the first writer gone", got)
	}
	n = writeSeq(t, w, n, 100)
	// Appended: the sequence goes on without a gap across both writers.
	checkSeq(t, readAll(t, path, ReadOptions{Tail: -1}), -1, n)
}

func TestWriterClose(t *testing.T) {
	w := newWriter(t, filepath.Join(t.TempDir(), "log"), Options{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if err := w.WriteEntry(Entry{Log: "x", Stream: "stdout", Time: t0}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteEntry after Close = %v, want os.ErrClosed", err)
	}
}

func TestConcurrentCopyStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	// Enough files that nothing is rotated away.
	w := newWriter(t, path, Options{MaxSize: 16 << 10, MaxFiles: 1000})
	const lines = 2000
	errs := make(chan error, 2)
	for _, stream := range []string{"stdout", "stderr"} {
		pr, pw := io.Pipe()
		go func() { errs <- w.CopyStream(stream, pr) }()
		go func() {
			for i := range lines {
				fmt.Fprintf(pw, "%s %06d %s\n", stream, i, strings.Repeat("p", i%50))
			}
			pw.Close()
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	next := map[string]int{}
	for _, e := range readAll(t, path, ReadOptions{Tail: -1}) {
		want := fmt.Sprintf("%s %06d %s\n", e.Stream, next[e.Stream], strings.Repeat("p", next[e.Stream]%50))
		if e.Log != want {
			t.Fatalf("%s entry %q, want %q", e.Stream, e.Log, want)
		}
		next[e.Stream]++
	}
	if next["stdout"] != lines || next["stderr"] != lines {
		t.Errorf("read %v lines, want %d per stream", next, lines)
	}
}

func TestWriteEntryDoesNotAllocate(t *testing.T) {
	w := newWriter(t, filepath.Join(t.TempDir(), "log"), Options{MaxSize: 1 << 30})
	e := Entry{Log: "a typical line of output, <escaped> & \"quoted\" ✓\n", Stream: "stdout", Time: t0}
	line := []byte(e.Log)
	if n := testing.AllocsPerRun(100, func() { w.WriteEntry(e) }); n != 0 {
		t.Errorf("WriteEntry: %v allocations per entry, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { writeLine(w, line, "stdout", t0) }); n != 0 {
		t.Errorf("CopyStream's writeLine: %v allocations per line, want 0", n)
	}
}

func BenchmarkWriteEntry(b *testing.B) {
	w, err := NewWriter(filepath.Join(b.TempDir(), "log"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	e := Entry{Log: "GET /index.html 200 1234 \"Mozilla/5.0 (X11; Linux x86_64)\" 0.002s\n", Stream: "stdout", Time: t0}
	b.SetBytes(int64(len(appendEntry(nil, e.Log, e.Stream, e.Time))))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WriteEntry(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCopyStream(b *testing.B) {
	w, err := NewWriter(filepath.Join(b.TempDir(), "log"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	input := bytes.Repeat([]byte("GET /index.html 200 1234 \"Mozilla/5.0 (X11; Linux x86_64)\" 0.002s\n"), 1000)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	for b.Loop() {
		if err := w.CopyStream("stdout", bytes.NewReader(input)); err != nil {
			b.Fatal(err)
		}
	}
}

// Helpers shared by the tests of this package.

func newWriter(t testing.TB, path string, opts Options) *Writer {
	t.Helper()
	w, err := NewWriter(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func readAll(t testing.TB, path string, opts ReadOptions) []Entry {
	t.Helper()
	var got []Entry
	if err := Read(t.Context(), path, opts, func(e Entry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// seqLine is the Log of entry i of a numbered sequence; lengths vary so
// that file boundaries fall anywhere in a line.
func seqLine(i int) string {
	return fmt.Sprintf("seq %08d %s\n", i, strings.Repeat("-", i%97))
}

// writeSeq writes entries numbered from first on until about size bytes
// of log are written and returns the number after the last one.
func writeSeq(t testing.TB, w *Writer, first, size int) int {
	t.Helper()
	i := first
	for written := 0; written < size; i++ {
		e := Entry{Log: seqLine(i), Stream: "stdout", Time: t0.Add(time.Duration(i) * time.Millisecond)}
		if err := w.WriteEntry(e); err != nil {
			t.Fatal(err)
		}
		written += len(appendEntry(nil, e.Log, e.Stream, e.Time))
	}
	return i
}

// checkSeq checks that got is the numbered sequence [from, to) with its
// times; from < 0 accepts any start.
func checkSeq(t testing.TB, got []Entry, from, to int) {
	t.Helper()
	if len(got) == 0 {
		t.Fatalf("no entries, want sequence up to %d", to)
	}
	if from < 0 {
		from = to - len(got)
	}
	if len(got) != to-from {
		t.Fatalf("%d entries, want %d (%d..%d)", len(got), to-from, from, to-1)
	}
	for k, e := range got {
		i := from + k
		if e.Log != seqLine(i) || !e.Time.Equal(t0.Add(time.Duration(i)*time.Millisecond)) {
			t.Fatalf("entry %d is %q at %v, want %q", k, e.Log, e.Time, seqLine(i))
		}
	}
}

func sameEntry(a, b Entry) bool {
	return a.Log == b.Log && a.Stream == b.Stream && a.Time.Equal(b.Time)
}

func logsOf(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Log)
	}
	return strings.Join(s, "|")
}

func abbrev(ss []string) []string {
	var out []string
	for _, s := range ss {
		if len(s) > 40 {
			s = fmt.Sprintf("%s…(%d bytes)", s[:20], len(s))
		}
		out = append(out, s)
	}
	return out
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func sorted(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return out
}
