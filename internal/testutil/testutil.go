// Package testutil holds what shoal's tests share: skipping tests that need
// root, building Go programs for test images, and the helper image that
// runtime and e2e tests run instead of pulling from a registry.
package testutil

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// RequiresRoot skips the test unless it runs as root, saying why. CI runs
// tests as root, so there they run.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, cgroups, mounts); CI runs tests as root")
	}
}

// binDirPrefix names the per-process directory that GoBuild builds into.
const binDirPrefix = "shoal-testbin-"

var (
	buildMu sync.Mutex
	binDir  string            // created on first use
	builds  map[string]*build // by package import path
)

type build struct {
	once sync.Once
	path string
	err  error
}

// GoBuild builds the main package pkg (an import path such as
// "github.com/shoal-dev/shoal/internal/testhelper") as a static binary
// (CGO_ENABLED=0, -trimpath) and returns its path. Each package is built
// once per test process, into a directory of that process,
// $TMPDIR/shoal-testbin-<pid>, since no test's TempDir lives as long as
// the process. Call Cleanup from TestMain to remove it; directories left
// by processes that are gone (a crash, a missing Cleanup) are removed the
// next time any test process builds.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	if builds == nil {
		builds = map[string]*build{}
	}
	b := builds[pkg]
	if b == nil {
		b = &build{}
		builds[pkg] = b
	}
	buildMu.Unlock()
	b.once.Do(func() { b.path, b.err = goBuild(pkg) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func goBuild(pkg string) (string, error) {
	dir, err := processBinDir()
	if err != nil {
		return "", err
	}
	// A directory per package keeps the binary's base name (argv[0] in
	// errors) while two packages may end in the same name.
	out := filepath.Join(dir, strings.ReplaceAll(pkg, "/", "_"), filepath.Base(pkg))
	gotool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		return "", fmt.Errorf("build %s: %w", pkg, err)
	}
	cmd := exec.Command(gotool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, output)
	}
	return out, nil
}

func processBinDir() (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir != "" {
		return binDir, nil
	}
	removeStaleBinDirs()
	dir := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("test binaries: %w", err)
	}
	binDir = dir
	return dir, nil
}

// removeStaleBinDirs removes the build directories of test processes that
// no longer run. A reused pid keeps a stale directory a while longer,
// which is harmless.
func removeStaleBinDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, dir := range matches {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), binDirPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// Cleanup removes the binaries GoBuild built in this process. Call it from
// TestMain after m.Run:
//
//	func TestMain(m *testing.M) { m.Run(); testutil.Cleanup() }
//
// GoBuild after Cleanup builds again.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	binDir, builds = "", nil
}
