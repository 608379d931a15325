package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/logs"
)

// The container commands, the same for both runtimes.
var (
	echoArgs  = []string{"/bin/helper", "echo", "hi"}
	trueArgs  = []string{"/bin/true"}
	sleepArgs = []string{"/bin/helper", "sleep", "inf"}
)

const (
	want = "hi\n" // what echoArgs prints
	// runTimeout bounds one measured run; a run that takes this long is a
	// failure, not a sample.
	runTimeout = 30 * time.Second
	// shoalLogFile is the container's json-file log in its directory
	// <root>/containers/<id> (runtime's logFile; the directory layout is
	// documented in package runtime).
	shoalLogFile = "container-json.log"
)

// shoalFirstOutput times a container running `helper echo hi` from the
// Create call until "hi" can be read from its log. It returns two times:
// when the entry was in the log file (seen through inotify, so no polling
// interval is added), and when the runtime's own reader, Logs with Follow
// started right after Start returned, delivered it.
func (b *bench) shoalFirstOutput(ctx context.Context) (r shoalRun, err error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	t0 := time.Now()
	c, err := b.rt.Create(runtime.Spec{Image: imageRef, Entrypoint: echoArgs})
	if err != nil {
		return r, fmt.Errorf("shoal: %w", err)
	}
	r.create = time.Since(t0)
	defer b.shoalRemove(c.ID, &err)
	w, err := watchLog(filepath.Join(b.root, "containers", c.ID), shoalLogFile)
	if err != nil {
		return r, fmt.Errorf("shoal: watch log: %w", err)
	}
	defer w.close()
	if err := b.rt.Start(c.ID); err != nil {
		return r, fmt.Errorf("shoal: %w", err)
	}
	r.start = time.Since(t0)
	apiAt, err := b.firstEntryViaLogs(ctx, c.ID)
	if err != nil {
		return r, fmt.Errorf("shoal: Logs(Follow): %w", err)
	}
	fileAt, err := w.wait(ctx)
	if err != nil {
		return r, fmt.Errorf("shoal: log file never showed %q: %w", want, err)
	}
	r.total, r.viaLogs = fileAt.Sub(t0), apiAt.Sub(t0)
	return r, nil
}

// shoalRun is one timed shoal run: when Create and Start returned, and the
// end of the run (the output seen, or Wait returned), all since the Create
// call.
type shoalRun struct {
	create, start, total time.Duration
	viaLogs              time.Duration // first output only: delivered by Logs(Follow)
}

func (b *bench) firstEntryViaLogs(ctx context.Context, id string) (time.Time, error) {
	var at time.Time
	got := errors.New("got it")
	err := b.rt.Logs(ctx, id, logs.ReadOptions{Follow: true, Tail: -1}, func(e logs.Entry) error {
		if e.Log == want {
			at = time.Now()
			return got
		}
		return nil
	})
	switch {
	case !at.IsZero():
		return at, nil
	case err != nil:
		return at, err
	case ctx.Err() != nil:
		return at, ctx.Err()
	default:
		return at, fmt.Errorf("the log ended without %q", want)
	}
}

// shoalTrue times Create+Start+Wait of a container running true.
func (b *bench) shoalTrue(ctx context.Context) (r shoalRun, err error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	t0 := time.Now()
	c, err := b.rt.Create(runtime.Spec{Image: imageRef, Entrypoint: trueArgs})
	if err != nil {
		return r, fmt.Errorf("shoal: %w", err)
	}
	r.create = time.Since(t0)
	defer b.shoalRemove(c.ID, &err)
	if err := b.rt.Start(c.ID); err != nil {
		return r, fmt.Errorf("shoal: %w", err)
	}
	r.start = time.Since(t0)
	ex, err := b.rt.Wait(ctx, c.ID)
	r.total = time.Since(t0)
	if err != nil {
		return r, fmt.Errorf("shoal: wait: %w", err)
	}
	if ex.Code != 0 {
		return r, fmt.Errorf("shoal: true exited with %d%s", ex.Code, b.shoalInitLog(c.ID))
	}
	return r, nil
}

// shoalRemove removes a container after a run (not timed); a failure is
// the run's error unless it already has one.
func (b *bench) shoalRemove(id string, errp *error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	if err := b.rt.Remove(ctx, id, true); err != nil && *errp == nil {
		*errp = fmt.Errorf("shoal: remove: %w", err)
	}
}

func (b *bench) shoalInitLog(id string) string {
	out, _ := os.ReadFile(filepath.Join(b.root, "containers", id, "init.log"))
	if len(out) == 0 {
		return ""
	}
	return "; init.log: " + strings.TrimSpace(string(out))
}

// shoalMemory starts k containers running `helper sleep inf` and measures
// the runtime's processes: one shoal-init per container.
func (b *bench) shoalMemory(ctx context.Context, k int) (m memResult, err error) {
	var ids []string
	defer func() {
		for _, id := range ids {
			b.shoalRemove(id, &err)
		}
	}()
	for i := 0; i < k; i++ {
		if err := ctx.Err(); err != nil {
			return m, err
		}
		c, err := b.rt.Create(runtime.Spec{Image: imageRef, Entrypoint: sleepArgs})
		if err != nil {
			return m, fmt.Errorf("shoal: %w", err)
		}
		ids = append(ids, c.ID)
		if err := b.rt.Start(c.ID); err != nil {
			return m, fmt.Errorf("shoal: %w", err)
		}
	}
	if err := settle(ctx); err != nil {
		return m, err
	}
	m.containers = k
	inits := map[int]bool{}
	for _, id := range ids {
		c, err := b.rt.Inspect(id)
		if err != nil {
			return m, fmt.Errorf("shoal: %w", err)
		}
		if c.State != runtime.Running || c.Pid <= 0 {
			return m, fmt.Errorf("shoal: container %s is %s (pid %d), not running%s", id[:12], c.State, c.Pid, b.shoalInitLog(id))
		}
		if a := argv0(c.Pid); a != "shoal-init" {
			return m, fmt.Errorf("shoal: pid %d of container %s is %q, not shoal-init", c.Pid, id[:12], a)
		}
		if err := m.runtime.add(c.Pid); err != nil {
			return m, fmt.Errorf("shoal: init of %s: %w", id[:12], err)
		}
		inits[c.Pid] = true
		procs, err := b.rt.Top(id)
		if err != nil {
			return m, fmt.Errorf("shoal: top: %w", err)
		}
		for _, p := range procs {
			if p.Pid != c.Pid {
				if err := m.command.add(p.Pid); err != nil {
					return m, fmt.Errorf("shoal: command of %s: %w", id[:12], err)
				}
			}
		}
	}
	// Any other shoal-init on the machine that belongs to this run would be
	// overhead too; there should be none.
	for _, pid := range pidsWhere(func(pid int) bool {
		return argv0(pid) == "shoal-init" && strings.Contains(cmdline(pid), b.root)
	}) {
		if !inits[pid] {
			if err := m.runtime.add(pid); err == nil {
				m.extra = append(m.extra, pid)
			}
		}
	}
	return m, nil
}

// logWatch reports when a container's log first holds the wanted entry.
// It watches the container's directory with inotify rather than polling,
// so that the time it reports is when the entry became readable.
type logWatch struct {
	f    *os.File
	done chan watchResult
}

type watchResult struct {
	at  time.Time
	err error
}

func watchLog(dir, name string) (*logWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, so the file goes through Go's poller and Close wakes a
	// pending Read.
	w := &logWatch{f: os.NewFile(uintptr(fd), "inotify"), done: make(chan watchResult, 1)}
	go w.run(filepath.Join(dir, name), name)
	return w, nil
}

func (w *logWatch) run(path, name string) {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		at := time.Now()
		if err != nil {
			w.done <- watchResult{err: err}
			return
		}
		hit := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			l := int(binary.NativeEndian.Uint32(buf[off+12:]))
			ev := buf[off+unix.SizeofInotifyEvent : min(n, off+unix.SizeofInotifyEvent+l)]
			if string(bytes.TrimRight(ev, "\x00")) == name {
				hit = true
			}
			off += unix.SizeofInotifyEvent + l
		}
		if hit && logHas(path) {
			w.done <- watchResult{at: at}
			return
		}
	}
}

func (w *logWatch) wait(ctx context.Context) (time.Time, error) {
	select {
	case r := <-w.done:
		return r.at, r.err
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

func (w *logWatch) close() { w.f.Close() }

// logHas reports whether the json-file log at path holds a complete entry
// with the wanted text.
func logHas(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for {
		line, rest, ok := bytes.Cut(b, []byte("\n"))
		if !ok {
			return false // none, or a line still being written
		}
		var e logs.Entry
		if json.Unmarshal(line, &e) == nil && e.Log == want {
			return true
		}
		b = rest
	}
}

// settle lets freshly started processes finish their start-up allocations
// before their memory is read.
func settle(ctx context.Context) error {
	select {
	case <-time.After(time.Second):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
