package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCreateAppliesLimits(t *testing.T) {
	parent := testParent(t)
	quota, period := CPUs(0.1)
	r := Resources{CPUQuota: quota, CPUPeriod: period, MemoryLimit: 64 << 20, MemoryReservation: 32 << 20, PidsLimit: 50}
	c := mustCreate(t, parent, "limits", r)

	if len(c.Paths()) != len(realLayout(t).hierarchies) {
		t.Errorf("Paths() = %v, want one per hierarchy of %+v", c.Paths(), realLayout(t).hierarchies)
	}
	for _, p := range c.Paths() {
		if filepath.Base(p) != "limits" || filepath.Base(filepath.Dir(p)) != parent {
			t.Errorf("path %s is not <mount>/%s/limits", p, parent)
		}
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}

	if c.mode == "v2" {
		for file, want := range map[string]string{
			"cpu.max": "10000 100000", "memory.max": "67108864", "memory.low": "33554432", "pids.max": "50",
		} {
			if got := readTrim(t, filepath.Join(c.Paths()[0], file)); got != want {
				t.Errorf("%s = %q, want %q", file, got, want)
			}
		}
		return
	}
	for _, f := range []struct{ controller, file, want string }{
		{"cpu", "cpu.cfs_quota_us", "10000"},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"memory", "memory.limit_in_bytes", "67108864"},
		{"memory", "memory.soft_limit_in_bytes", "33554432"},
		{"pids", "pids.max", "50"},
	} {
		if got := readTrim(t, filepath.Join(pathIn(t, c, f.controller), f.file)); got != f.want {
			t.Errorf("%s = %q, want %q", f.file, got, f.want)
		}
	}

	var wantDevices []string
	for _, s := range V1DeviceSettings(DefaultDevices())[1:] {
		wantDevices = append(wantDevices, s.Value)
	}
	gotDevices := strings.Split(readTrim(t, filepath.Join(pathIn(t, c, "devices"), "devices.list")), "\n")
	slices.Sort(gotDevices)
	slices.Sort(wantDevices)
	if !slices.Equal(gotDevices, wantDevices) {
		t.Errorf("devices.list = %q, want %q", gotDevices, wantDevices)
	}

	// Without cpus and mems in the parent and the child, no process could
	// join; they must match the root's.
	cpuset := pathIn(t, c, "cpuset")
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		root := readTrim(t, filepath.Join(filepath.Dir(filepath.Dir(cpuset)), f))
		for _, p := range []string{filepath.Dir(cpuset), cpuset} {
			if got := readTrim(t, filepath.Join(p, f)); got != root || got == "" {
				t.Errorf("%s/%s = %q, want the root's %q", p, f, got, root)
			}
		}
	}
}

func TestUpdate(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "update", Resources{CPUQuota: 50000, MemoryLimit: 64 << 20, PidsLimit: 50})

	if err := c.Update(Resources{CPUQuota: 20000, CPUPeriod: 50000, MemoryLimit: 128 << 20, PidsLimit: 10}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != 128<<20 || st.PidsLimit != 10 {
		t.Errorf("after Update: MemoryLimit %d PidsLimit %d, want %d 10", st.MemoryLimit, st.PidsLimit, 128<<20)
	}
	cpuFile, cpuWant := "cpu.cfs_quota_us", "20000"
	if c.mode == "v2" {
		cpuFile, cpuWant = "cpu.max", "20000 50000"
	}
	if got := readTrim(t, filepath.Join(pathIn(t, c, "cpu"), cpuFile)); got != cpuWant {
		t.Errorf("%s = %q, want %q", cpuFile, got, cpuWant)
	}

	// Zero lifts every limit.
	if err := c.Update(Resources{}); err != nil {
		t.Fatal(err)
	}
	if st, err = c.Stats(); err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != 0 || st.PidsLimit != 0 {
		t.Errorf("after Update(zero): MemoryLimit %d PidsLimit %d, want 0 0", st.MemoryLimit, st.PidsLimit)
	}
	cpuWant = "-1"
	if c.mode == "v2" {
		cpuWant = "max 100000"
	}
	if got := readTrim(t, filepath.Join(pathIn(t, c, "cpu"), cpuFile)); got != cpuWant {
		t.Errorf("%s = %q, want %q", cpuFile, got, cpuWant)
	}

	if err := c.Update(Resources{CPUQuota: 10}); !errors.Is(err, ErrInvalidResources) {
		t.Errorf("Update(quota 10µs) = %v, want ErrInvalidResources", err)
	}
}

func TestAddProc(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "addproc", Resources{})
	p := startProc(t, "read x; exec sleep 30")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}

	pids, err := c.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{p.pid()}) {
		t.Errorf("Procs() = %v, want [%d]", pids, p.pid())
	}

	// The kernel's own view: in every hierarchy we use, the process is in
	// /<parent>/addproc.
	want := "/" + parent + "/addproc"
	procs := procCgroups(t, p.pid())
	for _, h := range c.dirs {
		key, ok := hierarchyKey(h.h, procs)
		if !ok {
			t.Errorf("/proc/%d/cgroup has no %s line: %v", p.pid(), h.h.name(), procs)
			continue
		}
		if procs[key] != want {
			t.Errorf("/proc/%d/cgroup %s: %s, want %s", p.pid(), key, procs[key], want)
		}
	}

	// A child forked afterwards is born inside.
	p.release(t)
	eventually(t, 5*time.Second, "sleep to run in the cgroup", func() bool {
		pids, _ := c.Procs()
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid()))
		return len(pids) == 1 && strings.TrimSpace(string(comm)) == "sleep"
	})

	if err := c.AddProc(1 << 30); err == nil || !strings.Contains(err.Error(), "add process") {
		t.Errorf("AddProc(no such pid) = %v, want an error", err)
	}
}

func TestStats(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "stats", Resources{MemoryLimit: 256 << 20, PidsLimit: 20})
	// dd's 8 MiB buffer is charged to the cgroup, so the peak is at least
	// that; sleep keeps the process (and some memory) there afterwards.
	p := startProc(t, "read x; dd if=/dev/zero of=/dev/null bs=8M count=4 2>/dev/null; exec sleep 30")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	eventually(t, 5*time.Second, "dd to finish", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.pid()))
		return strings.TrimSpace(string(comm)) == "sleep"
	})

	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stats: %+v", *st)
	if st.MemoryUsage == 0 {
		t.Error("MemoryUsage = 0")
	}
	if st.MemoryLimit != 256<<20 {
		t.Errorf("MemoryLimit = %d, want %d", st.MemoryLimit, 256<<20)
	}
	if c.mode != "v2" && st.MemoryMaxUsage < 8<<20 {
		t.Errorf("MemoryMaxUsage = %d, want at least dd's 8 MiB", st.MemoryMaxUsage)
	}
	if st.PidsCurrent != 1 || st.PidsLimit != 20 {
		t.Errorf("PidsCurrent %d PidsLimit %d, want 1 20", st.PidsCurrent, st.PidsLimit)
	}
	if st.CPUUsageNanos == 0 {
		t.Error("CPUUsageNanos = 0 after dd ran")
	}
}

func TestCPUThrottled(t *testing.T) {
	parent := testParent(t)
	quota, period := CPUs(0.01) // 1ms per 100ms: a busy loop is throttled at once
	c := mustCreate(t, parent, "cpu", Resources{CPUQuota: quota, CPUPeriod: period})
	p := startProc(t, "read x; while :; do :; done")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	var st *Stats
	eventually(t, 10*time.Second, "throttled periods", func() bool {
		var err error
		if st, err = c.Stats(); err != nil {
			t.Fatal(err)
		}
		return st.CPUThrottledPeriods > 0
	})
	if st.CPUUsageNanos == 0 {
		t.Error("CPUUsageNanos = 0 for a busy loop")
	}
}

func TestOOMKilled(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "oom", Resources{MemoryLimit: 20 << 20})
	if oom, err := c.OOMKilled(); err != nil || oom {
		t.Fatalf("OOMKilled() on a new cgroup = %v, %v; want false", oom, err)
	}
	// dd fills a 100 MiB buffer from /dev/zero: five times the limit, but
	// bounded, should the limit not hold.
	p := startProc(t, "read x; exec dd if=/dev/zero of=/dev/null bs=100M count=1")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	err := p.wait(t, 20*time.Second)
	if sig := signalOf(err); sig != syscall.SIGKILL {
		t.Errorf("dd ended with %v (signal %v), want SIGKILL; output: %s", err, sig, p.out.String())
	}
	oom, err := c.OOMKilled()
	if err != nil {
		t.Fatal(err)
	}
	if !oom {
		t.Error("OOMKilled() = false after the kernel killed dd")
	}
}

func TestPidsLimit(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "pids", Resources{PidsLimit: 4})
	p := startProc(t, "read x; for i in 1 2 3 4 5 6; do sleep 30 & done; wait")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	// The kernel counts each refused fork in pids.events, and the shell
	// says so too.
	events := filepath.Join(pathIn(t, c, "pids"), "pids.events")
	eventually(t, 5*time.Second, "a refused fork", func() bool {
		kv, err := readKV(events)
		return err == nil && kv["max"] > 0 && strings.Contains(strings.ToLower(p.out.String()), "fork")
	})
	pids, err := c.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) > 4 {
		t.Errorf("%d processes in a cgroup limited to 4: %v", len(pids), pids)
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.PidsCurrent > 4 {
		t.Errorf("PidsCurrent = %d, limit 4", st.PidsCurrent)
	}
	// Whether or not dash gave up after the failed fork, its children
	// (orphans, then) are still in the cgroup, and Kill finds them.
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if pids, err := c.Procs(); err != nil || len(pids) != 0 {
		t.Errorf("Procs() after Kill = %v, %v", pids, err)
	}
	p.wait(t, 5*time.Second)
}

func TestKill(t *testing.T) {
	parent := testParent(t)

	t.Run("several processes", func(t *testing.T) {
		c := mustCreate(t, parent, "kill", Resources{})
		if err := c.Kill(); err != nil {
			t.Fatalf("Kill of an empty cgroup: %v", err)
		}
		p := startProc(t, "read x; sleep 30 & sleep 30 & sleep 30 & wait")
		if err := c.AddProc(p.pid()); err != nil {
			t.Fatal(err)
		}
		p.release(t)
		eventually(t, 5*time.Second, "four processes", func() bool {
			pids, _ := c.Procs()
			return len(pids) == 4
		})
		if err := c.Kill(); err != nil {
			t.Fatal(err)
		}
		if pids, err := c.Procs(); err != nil || len(pids) != 0 {
			t.Errorf("Procs() after Kill = %v, %v", pids, err)
		}
		if sig := signalOf(p.wait(t, 5*time.Second)); sig != syscall.SIGKILL {
			t.Errorf("shell ended by %v, want SIGKILL", sig)
		}
	})

	t.Run("while forking", func(t *testing.T) {
		c := mustCreate(t, parent, "forker", Resources{PidsLimit: 200})
		p := startProc(t, "read x; while :; do sleep 30 & done")
		if err := c.AddProc(p.pid()); err != nil {
			t.Fatal(err)
		}
		p.release(t)
		eventually(t, 5*time.Second, "forks", func() bool {
			pids, _ := c.Procs()
			return len(pids) > 5
		})
		if err := c.Kill(); err != nil {
			t.Fatal(err)
		}
		if pids, err := c.Procs(); err != nil || len(pids) != 0 {
			t.Errorf("Procs() after Kill = %v, %v", pids, err)
		}
	})
}

func TestDelete(t *testing.T) {
	parent := testParent(t)
	id := randomName("del-")
	c, err := Create(parent, id, Resources{MemoryLimit: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "read x; exec sleep 30")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}

	if err := c.Delete(); !errors.Is(err, ErrPopulated) {
		t.Errorf("Delete with a process = %v, want ErrPopulated", err)
	}
	for _, path := range c.Paths() {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("failed Delete removed %s: %v", path, err)
		}
	}
	if err := DeleteParent(parent); !errors.Is(err, ErrPopulated) {
		t.Errorf("DeleteParent with a container = %v, want ErrPopulated", err)
	}

	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	if found := findNamed(t, "/sys/fs/cgroup", id); len(found) > 0 {
		t.Errorf("after Delete: %v", found)
	}
	if err := c.Delete(); err != nil {
		t.Errorf("second Delete = %v, want nil", err)
	}
	if _, err := Load(parent, id); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load after Delete = %v, want fs.ErrNotExist", err)
	}

	for _, h := range realLayout(t).hierarchies {
		if _, err := os.Stat(filepath.Join(h.mount, parent)); err != nil {
			t.Errorf("Delete removed the parent in %s: %v", h.name(), err)
		}
	}
	if err := DeleteParent(parent); err != nil {
		t.Fatal(err)
	}
	if found := findNamed(t, "/sys/fs/cgroup", parent); len(found) > 0 {
		t.Errorf("after DeleteParent: %v", found)
	}
	if err := DeleteParent(parent); err != nil {
		t.Errorf("second DeleteParent = %v, want nil", err)
	}
}

func TestDeleteRemovesNestedCgroups(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "nested", Resources{})
	// A container with a writable cgroupfs (systemd inside) makes its own.
	p := startProc(t, "read x; exec sleep 30")
	for _, path := range c.Paths() {
		if err := os.Mkdir(filepath.Join(path, "inner"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inner := filepath.Join(pathIn(t, c, "pids"), "inner")
	if err := writeFile(filepath.Join(inner, "cgroup.procs"), strconv.Itoa(p.pid())); err != nil {
		t.Fatal(err)
	}
	if pids, err := c.Procs(); err != nil || !slices.Equal(pids, []int{p.pid()}) {
		t.Errorf("Procs() = %v, %v; want the nested process %d", pids, err, p.pid())
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	for _, path := range c.Paths() {
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there: %v", path, err)
		}
	}
}

func TestLoad(t *testing.T) {
	parent := testParent(t)
	c := mustCreate(t, parent, "load", Resources{PidsLimit: 7})
	l, err := Load(parent, "load")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l.Paths(), c.Paths()) {
		t.Errorf("Load paths %v, Create paths %v", l.Paths(), c.Paths())
	}
	// The loaded handle drives the same cgroup.
	p := startProc(t, "read x; exec sleep 30")
	if err := l.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	if pids, err := c.Procs(); err != nil || !slices.Equal(pids, []int{p.pid()}) {
		t.Errorf("Procs() = %v, %v after AddProc through Load", pids, err)
	}
	if st, err := l.Stats(); err != nil || st.PidsLimit != 7 {
		t.Errorf("Stats() through Load = %+v, %v", st, err)
	}

	if _, err := Load(parent, "absent"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(absent) = %v, want fs.ErrNotExist", err)
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	parent := testParent(t)
	if _, err := Create(parent, "a/b", Resources{}); err == nil {
		t.Error("Create with a slash in the id succeeded")
	}
	if _, err := Create(parent, "bad", Resources{CPUQuota: 10}); !errors.Is(err, ErrInvalidResources) {
		t.Errorf("Create(quota 10µs) = %v, want ErrInvalidResources", err)
	}
	if found := findNamed(t, "/sys/fs/cgroup", parent); len(found) > 0 {
		t.Errorf("refused Create left %v", found)
	}

	// A leftover in one hierarchy (pids, which Create reaches after most
	// others on this host) makes Create fail after it made the others; it
	// must remove what it made, and only that.
	l := realLayout(t)
	var stale string
	for _, h := range l.hierarchies {
		if h.has("pids") || (l.mode == "v2" && h.unified) {
			stale = filepath.Join(h.mount, parent, "taken")
		}
	}
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Create(parent, "taken", Resources{MemoryLimit: 64 << 20})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over a leftover = %v, want fs.ErrExist", err)
	}
	t.Logf("error: %v", err)
	if found := findNamed(t, "/sys/fs/cgroup", "taken"); !slices.Equal(found, []string{stale}) {
		t.Errorf("after failed Create: %v, want only the leftover %s", found, stale)
	}
	if found := findNamed(t, "/sys/fs/cgroup", parent); len(found) != 1 {
		t.Errorf("after failed Create, parents %v; want only the leftover's", found)
	}

	c := mustCreate(t, parent, "twice", Resources{})
	if _, err := Create(parent, "twice", Resources{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Create = %v, want fs.ErrExist", err)
	}
	for _, path := range c.Paths() {
		if _, err := os.Stat(path); err != nil {
			t.Errorf("failed second Create removed the first's %s", path)
		}
	}
}

// deviceNodes makes device nodes in a temporary directory: ones the default
// rules allow, and ones they deny (a block device of this host, and a
// character device outside the list). Nodes the test process itself cannot
// open are left out, so that a denial proves the cgroup's doing.
func deviceNodes(t *testing.T) (allowed, denied []string) {
	t.Helper()
	dir := t.TempDir()
	mk := func(name string, mode uint32, major, minor uint32) string {
		p := filepath.Join(dir, name)
		if err := unix.Mknod(p, mode|0o666, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatalf("mknod %s: %v", p, err)
		}
		return p
	}
	allowed = []string{mk("null", unix.S_IFCHR, 1, 3), mk("zero", unix.S_IFCHR, 1, 5)}
	candidates := []string{mk("kmsg", unix.S_IFCHR, 1, 11)}
	if entries, err := os.ReadDir("/sys/dev/block"); err == nil && len(entries) > 0 {
		var major, minor uint32
		if _, err := fmt.Sscanf(entries[0].Name(), "%d:%d", &major, &minor); err == nil {
			candidates = append(candidates, mk("disk", unix.S_IFBLK, major, minor))
		}
	}
	for _, p := range append(slices.Clone(allowed), candidates...) {
		f, err := os.Open(p)
		if err != nil {
			if slices.Contains(allowed, p) {
				t.Fatalf("cannot open %s outside any container: %v", p, err)
			}
			t.Logf("leaving out %s: cannot open it outside a container either: %v", p, err)
			continue
		}
		f.Close()
		if !slices.Contains(allowed, p) {
			denied = append(denied, p)
		}
	}
	if len(denied) == 0 {
		t.Skip("no device node to test denial with")
	}
	return allowed, denied
}

// openScript tries to open each argument and prints "<path>: ok" or the
// shell's error, which names the path and the errno's text.
const openScript = `read x; for f; do (: <"$f") 2>&1 && echo "$f: ok"; done; true`

func checkDeviceAccess(t *testing.T, c *Cgroup, allowed, denied []string) {
	t.Helper()
	p := startProc(t, openScript, append(slices.Clone(allowed), denied...)...)
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	if err := p.wait(t, 5*time.Second); err != nil {
		t.Fatalf("shell: %v: %s", err, p.out.String())
	}
	out := p.out.String()
	for _, f := range allowed {
		if !strings.Contains(out, f+": ok") {
			t.Errorf("cannot open %s in the container; output:\n%s", f, out)
		}
	}
	for _, f := range denied {
		if strings.Contains(out, f+": ok") || !strings.Contains(out, f+": Operation not permitted") {
			t.Errorf("%s not denied with EPERM in the container; output:\n%s", f, out)
		}
	}
}

func TestDevicesDenied(t *testing.T) {
	parent := testParent(t)
	allowed, denied := deviceNodes(t)
	c := mustCreate(t, parent, "devices", Resources{})
	checkDeviceAccess(t, c, allowed, denied)
}

// TestV2OnHybridHost runs the v2 code (unified hierarchy, eBPF device
// filter, cgroup.kill, cgroup2 stats) against the cgroup2 mount of this
// hybrid host. That mount has no cpu, memory or pids controller, so limits
// cannot be tested there, but everything else can.
func TestV2OnHybridHost(t *testing.T) {
	parent := testParent(t)
	real := realLayout(t)
	if real.mode != "hybrid" {
		t.Skipf("host is %s: the v2 code runs in the other tests or not at all", real.mode)
	}
	unified := real.hierarchies[len(real.hierarchies)-1]
	v2 := &layout{mode: "v2", hierarchies: []hierarchy{{mount: unified.mount, unified: true, required: true}}}
	saved := hostLayout
	hostLayout = func() (*layout, error) { return v2, nil }
	t.Cleanup(func() { hostLayout = saved })

	if Mode() != "v2" {
		t.Fatalf("Mode() = %q with the v2 layout", Mode())
	}

	// A limit whose controller is missing fails, and leaves nothing.
	if _, err := Create(parent, "nomem", Resources{MemoryLimit: 64 << 20}); err == nil {
		t.Error("Create with a memory limit but no memory controller succeeded")
	} else {
		t.Logf("error: %v", err)
	}
	if _, err := os.Stat(filepath.Join(unified.mount, parent, "nomem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed Create left its directory: %v", err)
	}

	c := mustCreate(t, parent, "v2", Resources{})
	if want := []string{filepath.Join(unified.mount, parent, "v2")}; !slices.Equal(c.Paths(), want) {
		t.Errorf("Paths() = %v, want %v", c.Paths(), want)
	}
	l, err := Load(parent, "v2")
	if err != nil || !slices.Equal(l.Paths(), c.Paths()) {
		t.Errorf("Load = %v, %v", l, err)
	}

	t.Run("devices", func(t *testing.T) {
		allowed, denied := deviceNodes(t)
		checkDeviceAccess(t, c, allowed, denied)
	})

	t.Run("procs, stats and kill", func(t *testing.T) {
		p := startProc(t, "read x; dd if=/dev/zero of=/dev/null bs=1M count=64 2>/dev/null; sleep 30 & sleep 30 & wait")
		if err := c.AddProc(p.pid()); err != nil {
			t.Fatal(err)
		}
		if got := procCgroups(t, p.pid())["unified"]; got != "/"+parent+"/v2" {
			t.Errorf("/proc/%d/cgroup: 0::%s, want /%s/v2", p.pid(), got, parent)
		}
		p.release(t)
		eventually(t, 5*time.Second, "three processes", func() bool {
			pids, _ := c.Procs()
			return len(pids) == 3
		})
		st, err := c.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.CPUUsageNanos == 0 {
			t.Errorf("CPUUsageNanos = 0 after dd; stats %+v", *st)
		}
		if err := c.Kill(); err != nil {
			t.Fatal(err)
		}
		if pids, err := c.Procs(); err != nil || len(pids) != 0 {
			t.Errorf("Procs() after Kill = %v, %v", pids, err)
		}
		if sig := signalOf(p.wait(t, 5*time.Second)); sig != syscall.SIGKILL {
			t.Errorf("shell ended by %v, want SIGKILL", sig)
		}
	})

	if err := c.Delete(); err != nil {
		t.Fatal(err)
	}
	if err := DeleteParent(parent); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(unified.mount, parent)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("parent still there: %v", err)
	}
}
