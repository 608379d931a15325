package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"testing"
)

// tb lets the benchmark use internal/testutil, which is written for tests:
// its functions take a testing.TB, make files in TempDir and report
// failure through Fatal. The embedded TB is nil: a method testutil starts
// to need and tb does not define panics, naming it. (The same stand-in as
// bench/runtime's.)
type tb struct {
	testing.TB
	dir string
	n   int
	err error
}

func (t *tb) Helper()      {}
func (t *tb) Name() string { return "bench" }

func (t *tb) TempDir() string {
	t.n++
	d := filepath.Join(t.dir, fmt.Sprintf("testutil-%d", t.n))
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func (t *tb) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }
func (t *tb) Fatal(args ...any)               { t.err = errors.New(fmt.Sprint(args...)); goruntime.Goexit() }
func (t *tb) Fatalf(format string, args ...any) {
	t.err = fmt.Errorf(format, args...)
	goruntime.Goexit()
}

// withTB runs f with a tb whose temp dirs are under dir, on a goroutine of
// its own so that Fatal can end it, and returns what Fatal reported.
func withTB(dir string, f func(t testing.TB)) error {
	t := &tb{dir: dir}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(t)
	}()
	<-done
	return t.err
}
