package main

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/image"
)

const imageRef = "bench-helper:latest"

// bench holds everything a run sets up, so that cleanup can undo it.
type bench struct {
	cfg      config
	runcPath string

	tmp         string
	runDir      string
	rand        string
	shoalParent string // cgroup parent of shoal's containers
	runcParent  string // cgroup parent of runc's containers
	initPath    string

	rt        *runtime.Runtime
	root      string // shoal's data dir
	rootfsDir string // the same rootfs, unpacked, for runc
	runcRoot  string // runc's state dir (--root)
	bundles   string
	template  *specs.Spec     // from `runc spec`
	runcIDs   map[string]bool // runc containers launched and not deleted yet
	runcSeq   int

	runcVersion string
}

func findRunc() (string, error) {
	p, err := exec.LookPath("runc")
	if err != nil {
		return "", errors.New("runc not found: this benchmark compares with Debian's runc; install it with `apt-get install runc` (`make bench` does)")
	}
	return p, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	b.rand = randHex(4)
	b.shoalParent = "shoal-bench-" + b.rand
	b.runcParent = "runc-bench-" + b.rand
	if b.tmp, err = os.MkdirTemp("", "shoal-bench-"); err != nil {
		return err
	}
	// Exec sockets live here; sun_path holds 107 bytes, so keep it short.
	if b.runDir, err = os.MkdirTemp("/run", "shb-"); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, b.runcPath, "--version").Output()
	if err != nil {
		return fmt.Errorf("runc --version: %w", err)
	}
	b.runcVersion = strings.TrimPrefix(strings.SplitN(string(out), "\n", 2)[0], "runc version ")

	if err := checkModule(ctx); err != nil {
		return err
	}
	// The helper image of the runtime's tests (internal/testutil): the same
	// static helper binary for both runtimes.
	var tarball string
	if err := withTB(b.tmp, func(t testing.TB) {
		tarball = testutil.HelperRootfs(t, nil)
		if b.cfg.initPath == "" {
			b.initPath = testutil.GoBuild(t, "github.com/shoal-dev/shoal/cmd/init")
		}
	}); err != nil {
		return err
	}
	if b.cfg.initPath != "" {
		if b.initPath, err = filepath.Abs(b.cfg.initPath); err != nil {
			return err
		}
		if _, err := os.Stat(b.initPath); err != nil {
			return fmt.Errorf("-shoal-init: %w (build it with `make build`, or leave the flag empty to build it here)", err)
		}
	}
	b.rootfsDir = filepath.Join(b.tmp, "rootfs")
	if err := untar(tarball, b.rootfsDir); err != nil {
		return fmt.Errorf("unpack rootfs for runc: %w", err)
	}

	b.root = filepath.Join(b.tmp, "shoal")
	if b.rt, err = runtime.Open(runtime.Options{
		Root:         b.root,
		RunDir:       b.runDir,
		InitPath:     b.initPath,
		CgroupParent: b.shoalParent,
	}); err != nil {
		return err
	}
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := b.rt.Images().Import(f, imageRef, &image.Config{Env: []string{"PATH=/bin"}, WorkingDir: "/"}); err != nil {
		return err
	}

	b.runcRoot = filepath.Join(b.tmp, "runc-state")
	b.bundles = filepath.Join(b.tmp, "bundles")
	for _, d := range []string{b.runcRoot, b.bundles, filepath.Join(b.tmp, "spec")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	if out, err := exec.CommandContext(ctx, b.runcPath, "spec", "--bundle", filepath.Join(b.tmp, "spec")).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %v: %s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(b.tmp, "spec", "config.json"))
	if err != nil {
		return err
	}
	b.template = new(specs.Spec)
	if err := json.Unmarshal(raw, b.template); err != nil {
		return fmt.Errorf("runc spec: %w", err)
	}
	if b.template.Process == nil || b.template.Root == nil || b.template.Linux == nil {
		return errors.New("runc spec: config.json lacks process, root or linux")
	}
	return nil
}

// checkModule makes sure the program runs in the shoal repository, where
// testutil can build the helper and the init.
func checkModule(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "list", "-m").Output()
	if err != nil || strings.TrimSpace(string(out)) != "github.com/shoal-dev/shoal" {
		return errors.New("run this from the shoal repository: go run ./bench/runtime -shoal-init bin/shoal-init")
	}
	return nil
}

// tb lets the benchmark use internal/testutil, which is written for tests:
// its functions take a testing.TB, make files in TempDir and report
// failure through Fatal. The embedded TB is nil: a method testutil starts
// to need and tb does not define panics, naming it.
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

// untar unpacks the rootfs tarball (directories, regular files and
// symlinks, as testutil writes) into dir, with modes and owners.
func untar(tarball, dir string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		if name == "/" {
			continue
		}
		p := filepath.Join(dir, name)
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, mode); err != nil && !os.IsExist(err) {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				return err
			}
			continue
		default:
			return fmt.Errorf("%s: unsupported tar entry type %q", h.Name, h.Typeflag)
		}
		if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
			return err
		}
		// After chown, which clears set-id bits; and past the umask.
		if err := os.Chmod(p, tarMode(h.Mode)); err != nil {
			return err
		}
	}
}

// tarMode turns a tar header's mode into an os.FileMode with the set-id
// and sticky bits where os.Chmod expects them.
func tarMode(m int64) fs.FileMode {
	mode := fs.FileMode(m).Perm()
	for bit, fm := range map[int64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
		if m&bit != 0 {
			mode |= fm
		}
	}
	return mode
}

// cleanup removes every container, cgroup, process and directory the run
// made, then checks that none is left; it returns what went wrong.
func (b *bench) cleanup() []string {
	var problems []string
	note := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if b.rt != nil {
		for _, c := range b.rt.List() {
			if err := b.rt.Remove(ctx, c.ID, true); err != nil {
				note("shoal: remove container %s: %v", c.ID[:12], err)
			}
		}
		_ = b.rt.Close()
	}
	if b.shoalParent != "" {
		if err := cgroups.DeleteParent(b.shoalParent); err != nil {
			note("shoal: %v", err)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(b.runcIDs)) {
		if err := b.runcDelete(ctx, id); err != nil {
			note("runc: %v", err)
		}
	}
	if b.runcParent != "" {
		for _, p := range testutil.CgroupDirsNamed(b.runcParent) {
			if err := testutil.RemoveCgroupTree(p); err != nil {
				note("runc: cgroup parent: %v", err)
			}
		}
	}
	// What the runtime made for its containers must be gone with them.
	if b.rt != nil {
		for _, d := range []string{b.runDir, filepath.Join(b.root, "containers")} {
			if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
				note("shoal: %s still holds %d entries after every container was removed (first: %s)", d, len(ents), ents[0].Name())
			}
		}
	}
	if b.tmp != "" {
		if m := mountsUnder(b.tmp); len(m) > 0 {
			note("mounts left on the host under %s: %v", b.tmp, m)
		}
	}
	for _, d := range []string{b.runDir, b.tmp} {
		if d != "" {
			if err := os.RemoveAll(d); err != nil {
				note("%v", err)
			}
		}
	}

	// Prove it: nothing of ours may be left. What is left is removed as far
	// as possible and reported.
	testutil.Cleanup()
	reapChildren(5 * time.Second)
	if b.rand != "" {
		if procs := liveProcsInCgroupsNamed("bench-"+b.rand, 5*time.Second); len(procs) > 0 {
			note("processes left in the benchmark's cgroups: %v; killing them", procs)
			for _, p := range procs {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, p := range testutil.CgroupDirsContaining("bench-" + b.rand) {
			note("cgroup left behind: %s", p)
			if err := testutil.RemoveCgroupTree(p); err != nil {
				note("%v", err)
			}
		}
	}
	return problems
}

// reapChildren reaps the processes that became ours as the subreaper
// (the commands of detached runc containers, once runc has exited), until
// none is left or timeout. It runs last, when no exec.Cmd is waiting.
func reapChildren(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
		switch {
		case err != nil: // ECHILD: no children left
			return
		case pid == 0: // children left, none exited yet
			time.Sleep(20 * time.Millisecond)
		}
	}
}
