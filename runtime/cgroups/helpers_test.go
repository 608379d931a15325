package cgroups

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requiresRoot skips tests that need to write cgroups; CI runs as root.
func requiresRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root")
	}
}

// realLayout is the host's, read before any test swaps hostLayout, so that
// cleanup covers every hierarchy whatever a test pretends.
func realLayout(t *testing.T) *layout {
	t.Helper()
	l, err := hostLayout()
	if err != nil {
		t.Fatalf("cgroup layout: %v", err)
	}
	return l
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// testParent returns a parent cgroup name of this test's own and removes
// everything under it when the test ends, processes included, without
// trusting the code under test.
func testParent(t *testing.T) string {
	t.Helper()
	requiresRoot(t)
	l := realLayout(t)
	parent := randomName("shoal-test-")
	t.Cleanup(func() {
		for _, h := range l.hierarchies {
			if err := forceRemove(filepath.Join(h.mount, parent)); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return parent
}

// forceRemove kills every process below root and removes its cgroups.
func forceRemove(root string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		dirs, err := subdirs(root)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		busy := false
		for _, d := range dirs {
			_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0)
			pids, _ := readPids(d)
			for _, pid := range pids {
				busy = true
				_ = unix.Kill(pid, unix.SIGKILL)
			}
			if len(pids) == 0 {
				_ = unix.Rmdir(d)
			}
		}
		if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cannot remove %s (busy=%v)", root, busy)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is a test process: /bin/sh running script, which should start with
// `read x` so that the test can move it into a cgroup before it does the
// interesting part, and then let it go with release.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    syncBuffer
	done   chan struct{}
	err    error // from Wait, once done is closed
	script string
}

func startProc(t *testing.T, script string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{}), script: script}
	p.cmd = exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	// Orphaned children keep the output pipe open; Wait must not wait
	// for them once the shell is gone.
	p.cmd.WaitDelay = time.Second
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %q: %v", script, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// release lets the script continue past its `read x`.
func (p *proc) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, "\n"); err != nil {
		t.Fatalf("release process %d: %v", p.pid(), err)
	}
}

// wait returns the process's exit error, failing the test if it runs on.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("process %d (%q) still running after %v; output: %s", p.pid(), p.script, timeout, p.out.String())
		return nil
	}
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal returns the signal that ended the process, or -1.
func signalOf(err error) syscall.Signal {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal()
		}
	}
	return -1
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procCgroups parses /proc/<pid>/cgroup into hierarchy name → path, keyed
// like hierarchy.name ("cpu", "cpu,cpuacct", "name=systemd", "unified").
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 4:memory:/shoal/abc, or 0::/shoal/abc for cgroup2
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		key := parts[1]
		if key == "" {
			key = "unified"
		}
		out[key] = parts[2]
	}
	return out
}

// hierarchyKey matches hierarchy.name to the controller list in
// /proc/PID/cgroup, which may name more controllers than shoal uses
// (net_cls,net_prio) in another order.
func hierarchyKey(h hierarchy, procs map[string]string) (string, bool) {
	if h.unified {
		_, ok := procs["unified"]
		return "unified", ok
	}
	for k := range procs {
		if slices.Contains(strings.Split(k, ","), h.controllers[0]) {
			return k, true
		}
	}
	return "", false
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	s, err := readString(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pathIn returns c's directory in the hierarchy that has controller (v1),
// or its only directory (v2).
func pathIn(t *testing.T, c *Cgroup, controller string) string {
	t.Helper()
	for _, d := range c.dirs {
		if c.mode == "v2" || d.h.has(controller) {
			return d.path
		}
	}
	t.Fatalf("cgroup %s has no %s directory", c.name, controller)
	return ""
}

// mustCreate creates a cgroup and registers its removal.
func mustCreate(t *testing.T, parent, id string, r Resources) *Cgroup {
	t.Helper()
	c, err := Create(parent, id, r)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Kill(); err != nil {
			t.Errorf("cleanup Kill: %v", err)
		}
		if err := c.Delete(); err != nil {
			t.Errorf("cleanup Delete: %v", err)
		}
	})
	return c
}

// findNamed walks /sys/fs/cgroup for directories named name.
func findNamed(t *testing.T, root, name string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // a cgroup removed while we walked
			}
			return err
		}
		if d.IsDir() && d.Name() == name {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
