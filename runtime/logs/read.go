package logs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// ReadOptions select the entries Read passes on.
type ReadOptions struct {
	Follow       bool
	Since, Until time.Time // zero = unbounded; both inclusive, as Docker's
	Tail         int       // last N entries over all files; <0 = all
}

// pollInterval is how often a follower looks for new lines. Polling, not
// inotify: an agent may follow hundreds of containers and inotify instances
// are limited (128 per user by default), a poll is one read(2) that returns
// 0 at EOF plus one stat(2), and it works on every filesystem the data dir
// may live on. The cost is up to 50 ms of latency, which `logs -f` users do
// not notice.
const pollInterval = 50 * time.Millisecond

// scanChunk is the unit in which Tail reads files backwards.
const scanChunk = 64 << 10

// errRace means a rotation happened while files were being opened.
var errRace = errors.New("log rotated while opening")

// Read calls fn for each entry of path and its rotated files, oldest first,
// that lies within Since and Until; with Tail ≥ 0 only for the last Tail of
// those. An error from fn stops Read and is returned as is.
//
// With Follow, Read keeps reading entries as they are written, across
// rotations, until ctx is done (then it returns nil) or, with Until set,
// until Until has passed. A follower that falls behind the writer by more
// than MaxFiles-1 rotations within one poll loses the files deleted in
// between, as Docker's does. Without Follow, a missing log is an error
// matching fs.ErrNotExist and a done ctx ends Read with ctx.Err(); with
// Follow, Read waits for the log to be created.
//
// Lines that do not decode (a write torn by a full disk) are skipped, so
// that one bad line does not hide the rest of a container's output.
func Read(ctx context.Context, path string, opts ReadOptions, fn func(Entry) error) error {
	r := &reader{ctx: ctx, path: path, opts: opts, fn: fn}
	err := r.read()
	if r.lines.f != nil {
		r.lines.f.Close()
	}
	if opts.Follow && err != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

type reader struct {
	ctx   context.Context
	path  string
	opts  ReadOptions
	fn    func(Entry) error
	lines lineReader
}

func (r *reader) read() error {
	files, fresh, err := r.openFiles()
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	first, off := 0, int64(0)
	if r.opts.Tail >= 0 && !fresh {
		if first, off, err = r.tailStart(files); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
	}
	for i := first; i < len(files); i++ {
		if _, err := files[i].Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		off = 0
		if r.lines.f != nil {
			r.lines.f.Close()
		}
		r.lines.reset(files[i])
		files[i] = nil // r.lines owns it now
		if err := r.drain(); err != nil {
			return err
		}
	}
	if !r.opts.Follow {
		return nil
	}
	return r.follow()
}

// openFiles opens path and its rotated files, oldest first. With Follow
// and no log yet, it waits for one; fresh then says that every entry in it
// was written after Read began, so Tail does not apply.
func (r *reader) openFiles() (files []*os.File, fresh bool, err error) {
	for races := 0; ; {
		files, err = snapshot(r.path)
		switch {
		case err == nil:
			return files, fresh, nil
		case errors.Is(err, errRace) && races < 1000:
			races++
			// The writer renames a few files; a millisecond is plenty.
			if err := sleep(r.ctx, time.Millisecond); err != nil {
				return nil, false, err
			}
		case r.opts.Follow && errors.Is(err, fs.ErrNotExist):
			fresh = true
			if testHookWaiting != nil {
				testHookWaiting(r.path)
			}
			if err := sleep(r.ctx, pollInterval); err != nil {
				return nil, false, err
			}
		case errors.Is(err, fs.ErrNotExist) && races < 5:
			// With MaxFiles 1 a rotation deletes path.1 before it makes
			// path anew: for a moment neither exists. Look again before
			// saying there is no log.
			races++
			if err := sleep(r.ctx, time.Millisecond); err != nil {
				return nil, false, err
			}
		default:
			return nil, false, fmt.Errorf("read log: %w", err)
		}
	}
}

// testHookWaiting, set by tests, is called each time a follower finds no
// log yet.
var testHookWaiting func(path string)

// snapshot opens path, path.1, path.2 … and checks afterwards that every
// name still refers to the file opened under it, so that a rotation in
// between can neither hide nor repeat a file.
func snapshot(path string) ([]*os.File, error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for i := 0; ; i++ {
		f, err := os.Open(rotatedName(path, i))
		if errors.Is(err, fs.ErrNotExist) {
			if i == 0 {
				// Between the rename of path and its re-creation: path.1
				// exists, or (with MaxFiles 1, where path.1 is deleted right
				// after) path itself is back already.
				if _, err := os.Stat(rotatedName(path, 1)); err == nil {
					return nil, errRace
				}
				if _, err := os.Stat(path); err == nil {
					return nil, errRace
				}
				return nil, err
			}
			break
		}
		if err != nil {
			closeAll()
			return nil, err
		}
		files = append(files, f)
	}
	for i, f := range files {
		if same, err := isFile(f, rotatedName(path, i)); err != nil || !same {
			closeAll()
			return nil, errRace
		}
	}
	for i, j := 0, len(files)-1; i < j; i, j = i+1, j-1 {
		files[i], files[j] = files[j], files[i]
	}
	return files, nil
}

func isFile(f *os.File, name string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	ni, err := os.Stat(name)
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, ni), nil
}

// tailStart finds the file and offset from which the last Tail matching
// entries start, reading backwards so that a long log is not read whole.
func (r *reader) tailStart(files []*os.File) (int, int64, error) {
	last := len(files) - 1
	if r.opts.Tail == 0 {
		// Nothing old is shown; new entries start after the last
		// complete line (a line being written is new).
		size, err := fileSize(files[last])
		if err != nil {
			return 0, 0, err
		}
		var end int64
		err = scanBack(files[last], size, func(line []byte, off int64) bool {
			end = off + int64(len(line))
			return false
		})
		return last, end, err
	}
	need := r.opts.Tail
	for i := last; i >= 0; i-- {
		size, err := fileSize(files[i])
		if err != nil {
			return 0, 0, err
		}
		start := int64(-1)
		err = scanBack(files[i], size, func(line []byte, off int64) bool {
			var e Entry
			if json.Unmarshal(line, &e) != nil || !r.match(e) {
				return true
			}
			if need--; need == 0 {
				start = off
				return false
			}
			return true
		})
		if err != nil {
			return 0, 0, err
		}
		if start >= 0 {
			return i, start, nil
		}
	}
	return 0, 0, nil
}

func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// scanBack calls fn for each complete line of f[:size], last line first,
// with the line (newline included, valid only during the call) and its
// offset, until fn returns false. Bytes after the last newline belong to a
// line still being written and are skipped.
func scanBack(f io.ReaderAt, size int64, fn func(line []byte, off int64) bool) error {
	buf := make([]byte, scanChunk)
	// buf[lo:hi] holds f[off:off+hi-lo], the bytes not yet passed to fn.
	lo, hi, off := len(buf), len(buf), size
	complete := false // buf[lo:hi] ends at the end of a line
	for {
		data := buf[lo:hi]
		if !complete {
			if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
				hi, complete = lo+i+1, true
				continue
			}
			hi = lo
		} else if len(data) > 0 {
			if i := bytes.LastIndexByte(data[:len(data)-1], '\n'); i >= 0 {
				if !fn(data[i+1:], off+int64(i)+1) {
					return nil
				}
				hi = lo + i + 1
				continue
			}
		}
		if off == 0 {
			if complete && hi > lo {
				fn(buf[lo:hi], 0)
			}
			return nil
		}
		n := int(min(scanChunk, off))
		if lo < n {
			// Make room in front; a line longer than the buffer grows it.
			pending := hi - lo
			nb := buf
			if pending+n > len(buf) {
				nb = make([]byte, 2*(pending+n))
			}
			copy(nb[len(nb)-pending:], buf[lo:hi])
			buf, lo, hi = nb, len(nb)-pending, len(nb)
		}
		if _, err := f.ReadAt(buf[lo-n:lo], off-int64(n)); err != nil {
			return err
		}
		lo -= n
		off -= int64(n)
	}
}

// drain passes on every complete line up to the current end of the file.
func (r *reader) drain() error {
	for {
		line, err := r.lines.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if err := r.ctx.Err(); err != nil {
			return err
		}
		var e Entry
		if json.Unmarshal(line, &e) != nil || !r.match(e) {
			continue
		}
		if err := r.fn(e); err != nil {
			return err
		}
	}
}

func (r *reader) match(e Entry) bool {
	return (r.opts.Since.IsZero() || !e.Time.Before(r.opts.Since)) &&
		(r.opts.Until.IsZero() || !e.Time.After(r.opts.Until))
}

// follow reads the current file to its end, then waits for more lines or
// for the file to be rotated; after a rotation it reads the old file to its
// end (the writer finished with it before renaming it) and goes on with the
// one written after it.
func (r *reader) follow() error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if err := r.drain(); err != nil {
			return err
		}
		next, err := successor(r.path, r.lines.f)
		if err != nil {
			return fmt.Errorf("follow log: %w", err)
		}
		if next != nil {
			if err := r.drain(); err != nil {
				next.Close()
				return err
			}
			r.lines.f.Close()
			r.lines.reset(next)
			continue
		}
		if !r.opts.Until.IsZero() && time.Now().After(r.opts.Until) {
			return nil
		}
		select {
		case <-r.ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// successor opens the file written after cur, or returns nil if cur is
// still the current file or the writer is in the middle of a rotation (the
// caller asks again at its next poll).
func successor(path string, cur *os.File) (*os.File, error) {
	ci, err := cur.Stat()
	if err != nil {
		return nil, err
	}
	if pi, err := os.Stat(path); err == nil && os.SameFile(ci, pi) {
		return nil, nil
	}
	for k := 1; ; k++ {
		fi, err := os.Stat(rotatedName(path, k))
		if err != nil {
			break
		}
		if !os.SameFile(ci, fi) {
			continue
		}
		next, err := os.Open(rotatedName(path, k-1))
		if err != nil {
			return nil, ignoreNotExist(err)
		}
		// If cur moved on meanwhile, next may be a later file than its
		// successor; renames go oldest first, so cur still at path.k
		// proves path.(k-1) had not moved yet when opened.
		if same, err := isFile(cur, rotatedName(path, k)); err != nil || !same {
			next.Close()
			return nil, nil
		}
		return next, nil
	}
	if st, ok := ci.Sys().(*syscall.Stat_t); !ok || st.Nlink > 0 {
		return nil, nil // cur still has a name: a rotation moved it while we looked
	}
	// cur was deleted: the writer rotated it away before we got here. The
	// oldest file left is the closest to where we were.
	oldest := path
	for k := 1; ; k++ {
		if _, err := os.Stat(rotatedName(path, k)); err != nil {
			break
		}
		oldest = rotatedName(path, k)
	}
	next, err := os.Open(oldest)
	if err != nil {
		return nil, ignoreNotExist(err)
	}
	return next, nil
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// lineReader returns the complete lines of a file that is being appended
// to; a line without its newline yet stays buffered until it is complete.
type lineReader struct {
	f    *os.File
	buf  []byte
	r, w int // unread bytes are buf[r:w]
}

func (l *lineReader) reset(f *os.File) {
	l.f, l.r, l.w = f, 0, 0
	if l.buf == nil {
		l.buf = make([]byte, scanChunk)
	}
}

// next returns the next line, newline included, valid until the next call;
// io.EOF means no complete line is there yet.
func (l *lineReader) next() ([]byte, error) {
	for {
		if i := bytes.IndexByte(l.buf[l.r:l.w], '\n'); i >= 0 {
			line := l.buf[l.r : l.r+i+1]
			l.r += i + 1
			return line, nil
		}
		if l.r > 0 {
			l.w = copy(l.buf, l.buf[l.r:l.w])
			l.r = 0
		}
		if l.w == len(l.buf) {
			l.buf = append(l.buf, make([]byte, len(l.buf))...)
		}
		n, err := l.f.Read(l.buf[l.w:])
		l.w += n
		if n == 0 {
			if err == nil || err == io.EOF {
				return nil, io.EOF
			}
			return nil, err
		}
	}
}
