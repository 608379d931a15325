package exectest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/image"
)

// HelperImage is the tag of the helper image in a RuntimeEnv; its default
// command is `helper sleep inf`.
const HelperImage = "helper:latest"

// RuntimeEnv is a real runtime on fresh directories with its own cgroup
// parent and the helper image imported. Everything is removed when the
// test ends, also when it fails. Tests using it need root; call
// testutil.Cleanup from TestMain.
type RuntimeEnv struct {
	t    testing.TB
	opts runtime.Options
	// R is the current runtime; Reopen replaces it.
	R *runtime.Runtime
}

// NewRuntimeEnv skips the test unless it runs as root.
func NewRuntimeEnv(t testing.TB) *RuntimeEnv {
	t.Helper()
	testutil.RequiresRoot(t)
	// Under /run, not the long t.TempDir(): exec sockets live here and
	// unix socket paths hold 107 bytes.
	runDir, err := os.MkdirTemp("/run", "shl-t-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	e := &RuntimeEnv{t: t, opts: runtime.Options{
		Root:         t.TempDir(),
		RunDir:       runDir,
		InitPath:     testutil.GoBuild(t, "github.com/shoal-dev/shoal/cmd/init"),
		CgroupParent: "shoal-test-" + hex.EncodeToString(b),
	}}
	e.Reopen()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, c := range e.R.List() {
			if err := e.R.Remove(ctx, c.ID, true); err != nil {
				t.Errorf("cleanup: remove %s: %v", c.Name, err)
			}
		}
		e.R.Close()
		if err := cgroups.DeleteParent(e.opts.CgroupParent); err != nil {
			t.Errorf("cleanup: cgroup parent: %v", err)
		}
	})
	f, err := os.Open(testutil.HelperRootfs(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := e.R.Images().Import(f, HelperImage, &image.Config{
		Cmd: []string{"/bin/helper", "sleep", "inf"},
		Env: []string{"PATH=/bin"},
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// Reopen closes the current runtime (its containers go on) and opens the
// same directories again, as a restarted agent process would.
func (e *RuntimeEnv) Reopen() {
	e.t.Helper()
	if e.R != nil {
		e.R.Close()
	}
	r, err := runtime.Open(e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.R = r
}

// Container inspects a container by name or ID, failing the test if it
// does not exist.
func (e *RuntimeEnv) Container(ref string) runtime.Container {
	e.t.Helper()
	c, err := e.R.Inspect(ref)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}
