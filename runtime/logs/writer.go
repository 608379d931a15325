package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Defaults for Options, Docker's json-file defaults except that rotation is
// on: Docker grows a log forever unless max-size is set.
const (
	DefaultMaxSize  = 10 << 20
	DefaultMaxFiles = 3
)

// MaxLineSize is the largest Log of an entry made by CopyStream; a longer
// line is split into several entries, as Docker's partial messages are, so
// that a container printing without newlines cannot grow init's memory.
const MaxLineSize = 16 << 10

// Options configure a Writer.
type Options struct {
	MaxSize  int64 // bytes per file before rotating; 0 → 10 MiB
	MaxFiles int   // files kept including the current one; 0 → 3
}

// Writer appends entries to a log file and rotates it by size. It is safe
// for concurrent use, because a container's two streams are copied at once.
type Writer struct {
	path     string
	maxSize  int64
	maxFiles int

	mu     sync.Mutex
	f      *os.File // nil after a failed rotation; reopened by the next write
	size   int64
	buf    []byte // encoding buffer, reused under mu
	closed bool
}

// NewWriter opens path for appending, creating it if needed. Rotated files
// are path.1 (newest) … path.(MaxFiles-1); rotated files beyond that, left
// by an earlier writer with a larger MaxFiles, are removed so that the
// files on disk are exactly what Read will show.
func NewWriter(path string, opts Options) (*Writer, error) {
	if opts.MaxSize < 0 || opts.MaxFiles < 0 {
		return nil, fmt.Errorf("log %s: negative max size or max files", path)
	}
	w := &Writer{path: path, maxSize: opts.MaxSize, maxFiles: opts.MaxFiles}
	if w.maxSize == 0 {
		w.maxSize = DefaultMaxSize
	}
	if w.maxFiles == 0 {
		w.maxFiles = DefaultMaxFiles
	}
	for i := w.maxFiles; ; i++ {
		if err := os.Remove(rotatedName(path, i)); err != nil {
			break
		}
	}
	if err := w.open(); err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return w, nil
}

func (w *Writer) open() error {
	// 0640 as Docker: logs may hold secrets a container printed.
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// rotatedName is path.i, with path.0 being path itself.
func rotatedName(path string, i int) string {
	if i == 0 {
		return path
	}
	return path + "." + strconv.Itoa(i)
}

// WriteEntry appends e as one line, rotating first if the line would take
// the file over MaxSize. A line larger than MaxSize on its own still goes
// into a file of its own: losing it would be worse than one big file.
// The time is stored in UTC, as Docker does.
func (w *Writer) WriteEntry(e Entry) error {
	return writeLine(w, e.Log, e.Stream, e.Time)
}

func writeLine[S string | []byte](w *Writer, log S, stream string, t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("write log %s: %w", w.path, os.ErrClosed)
	}
	w.buf = appendEntry(w.buf[:0], log, stream, t.UTC())
	if w.f == nil {
		if err := w.open(); err != nil {
			return fmt.Errorf("write log: %w", err)
		}
	}
	if w.size > 0 && w.size+int64(len(w.buf)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	n, err := w.f.Write(w.buf)
	if err != nil {
		// Cut a torn line off (e.g. on ENOSPC), or the next line would be
		// glued to it and both would be unreadable.
		if n > 0 && w.f.Truncate(w.size) != nil {
			w.size += int64(n)
		}
		return fmt.Errorf("write log: %w", err)
	}
	w.size += int64(n)
	return nil
}

// rotate renames path.(n-1) … path.1 and path one place up, opens a new
// path, then deletes what was pushed out as path.n. Renaming, never
// truncating, lets a follower that holds the old file read it to its end;
// deleting last works for MaxFiles 1 too, and a crash in between leaves
// only a file that NewWriter removes.
func (w *Writer) rotate() error {
	for i := w.maxFiles; i >= 1; i-- {
		err := os.Rename(rotatedName(w.path, i-1), rotatedName(w.path, i))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// From here path is gone; the old file must not be written again.
	old := w.f
	w.f, w.size = nil, 0
	if err := old.Close(); err != nil {
		return err
	}
	if err := w.open(); err != nil {
		return err
	}
	if err := os.Remove(rotatedName(w.path, w.maxFiles)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// CopyStream reads r until EOF and writes one entry per line, the "\n" kept
// in Log as Docker does. A line longer than MaxLineSize is split into
// several entries (cut at a UTF-8 boundary where possible); a last line
// without "\n" is written at EOF. An entry's time is when its line was read.
//
// A failed write does not stop the copy: the container would block on a
// full pipe. CopyStream keeps reading and writing, and returns the first
// write error at EOF; a read error ends the copy at once.
func (w *Writer) CopyStream(stream string, r io.Reader) error {
	buf := make([]byte, MaxLineSize)
	var start, end int // unwritten bytes are buf[start:end]
	var werr error
	emit := func(line []byte, t time.Time) {
		if err := writeLine(w, line, stream, t); err != nil && werr == nil {
			werr = err
		}
	}
	for {
		n, rerr := r.Read(buf[end:])
		now := time.Now()
		end += n
		for {
			i := bytes.IndexByte(buf[start:end], '\n')
			if i < 0 {
				break
			}
			emit(buf[start:start+i+1], now)
			start += i + 1
		}
		if end-start == len(buf) {
			cut := utf8Cut(buf[start:end])
			emit(buf[start:start+cut], now)
			start += cut
		}
		if rerr != nil {
			if start < end {
				emit(buf[start:end], now)
			}
			if rerr == io.EOF {
				return werr
			}
			return fmt.Errorf("copy %s: %w", stream, rerr)
		}
		end = copy(buf, buf[start:end])
		start = 0
	}
}

// utf8Cut returns where to split a full buffer so that a multi-byte
// character at its end is not torn into two invalid halves (which the
// encoder would turn into two U+FFFD).
func utf8Cut(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if i > 0 && !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}

// Close closes the current file. Later writes fail; a second Close is a
// no-op so that both a deferred and an explicit Close are harmless.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
