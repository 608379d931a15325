package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// tb lets the benchmark use internal/testcluster and internal/testutil,
// which are written for tests: they take a testing.TB, make files in
// TempDir, register their cleanup with Cleanup and report failure through
// Fatal and Errorf. The embedded TB is nil: a method they start to need
// and tb does not define panics, naming it. (bench/swarm's stand-in, with
// Cleanup, Errorf and Failed added for testcluster.)
//
// Fatal ends the calling goroutine (runtime.Goexit), as in a test: the
// benchmark calls the harness from one goroutine, run under body, whose
// end it waits for.
type tb struct {
	testing.TB
	dir     string
	verbose bool

	mu       sync.Mutex
	n        int
	fatal    error    // what Fatal reported
	errs     []string // what Errorf reported
	cleanups []func()
	failed   bool // the benchmark failed: the harness then shows the nodes' logs
	// left counts the harness's notes of what the nodes' programs
	// left behind (kept quiet unless -v: a daemon stopped by SIGTERM
	// leaves its containers, links and tables, which the harness removes).
	left int
}

func (t *tb) Helper()      {}
func (t *tb) Name() string { return "bench" }

func (t *tb) TempDir() string {
	t.mu.Lock()
	t.n++
	n := t.n
	t.mu.Unlock()
	d := filepath.Join(t.dir, fmt.Sprintf("tb-%d", n))
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func (t *tb) Logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if strings.HasPrefix(msg, "testcluster: cleaned up after the node: ") {
		t.mu.Lock()
		t.left++
		t.mu.Unlock()
		if !t.verbose {
			return
		}
	}
	fmt.Fprintln(os.Stderr, "bench: "+msg)
}

func (t *tb) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "bench: "+msg)
	t.mu.Lock()
	t.errs = append(t.errs, msg)
	t.mu.Unlock()
}

func (t *tb) Fatal(args ...any) { t.fail(errors.New(fmt.Sprint(args...))) }
func (t *tb) Fatalf(format string, args ...any) {
	t.fail(fmt.Errorf(format, args...))
}

func (t *tb) fail(err error) {
	t.mu.Lock()
	if t.fatal == nil {
		t.fatal = err
	}
	t.failed = true
	t.mu.Unlock()
	goruntime.Goexit()
}

// Skip is only reached without root, which main checks first.
func (t *tb) Skip(args ...any) { t.fail(errors.New(fmt.Sprint(args...))) }

func (t *tb) Cleanup(f func()) {
	t.mu.Lock()
	t.cleanups = append(t.cleanups, f)
	t.mu.Unlock()
}

func (t *tb) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed || len(t.errs) > 0
}

// setFailed marks the run failed, so that the harness's cleanup shows the
// end of every node's log.
func (t *tb) setFailed() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}

// body runs f on a goroutine of its own, so that Fatal can end it, and
// returns what f returned or Fatal reported.
func (t *tb) body(f func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = f()
	}()
	<-done
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fatal != nil {
		return t.fatal
	}
	return err
}

// runCleanups runs what was registered with Cleanup, last first, as the
// testing package does. A Fatal inside one ends only that one.
func (t *tb) runCleanups() {
	t.mu.Lock()
	fs := slices.Clone(t.cleanups)
	t.cleanups = nil
	t.mu.Unlock()
	for _, f := range slices.Backward(fs) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		<-done
	}
}

// leftovers is how many things the harness noted that the nodes'
// programs left behind.
func (t *tb) leftovers() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.left
}

// errors returns what Errorf reported.
func (t *tb) errors() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.errs)
}
