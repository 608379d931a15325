package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/image"
	"github.com/shoal-dev/shoal/runtime/logs"
	"github.com/shoal-dev/shoal/runtime/rootfs"
	"github.com/shoal-dev/shoal/runtime/spec"
)

const testImage = "helper:latest"

type env struct {
	t      *testing.T
	r      *Runtime
	opts   Options
	parent string
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newEnv opens a runtime on fresh directories with its own cgroup parent
// and the helper image imported; everything is removed at the end, also
// when the test fails.
func newEnv(t *testing.T) *env {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	runDir, err := os.MkdirTemp("/run", "shl-t-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	opts := Options{
		Root:         root,
		RunDir:       runDir,
		InitPath:     testutil.GoBuild(t, "github.com/shoal-dev/shoal/cmd/init"),
		CgroupParent: "shoal-test-" + randHex(4),
	}
	e := &env{t: t, opts: opts, parent: opts.CgroupParent}
	e.r = e.open()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, c := range e.r.List() {
			if err := e.r.Remove(ctx, c.ID, true); err != nil {
				t.Errorf("cleanup: remove %s: %v", c.Name, err)
			}
		}
		e.r.Close()
		if err := cgroups.DeleteParent(opts.CgroupParent); err != nil {
			t.Errorf("cleanup: cgroup parent: %v", err)
		}
	})
	f, err := os.Open(testutil.HelperRootfs(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := e.r.Images().Import(f, testImage, &image.Config{
		Cmd:        []string{"/bin/helper", "sleep", "inf"},
		Env:        []string{"PATH=/bin", "FROM_IMAGE=yes"},
		WorkingDir: "/",
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) open() *Runtime {
	r, err := Open(e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) create(s Spec) Container {
	e.t.Helper()
	if s.Image == "" {
		s.Image = testImage
	}
	c, err := e.r.Create(s)
	if err != nil {
		e.t.Fatalf("create: %v", err)
	}
	return c
}

func (e *env) start(s Spec) Container {
	e.t.Helper()
	c := e.create(s)
	if err := e.r.Start(c.ID); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	return c
}

// run starts a container, waits for it to end and returns its exit and
// its stdout+stderr.
func (e *env) run(s Spec) (Exit, string) {
	e.t.Helper()
	c := e.start(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := e.r.Wait(ctx, c.ID)
	if err != nil {
		e.t.Fatalf("wait: %v", err)
	}
	return ex, e.logs(c.ID)
}

func (e *env) logs(id string) string {
	e.t.Helper()
	var b strings.Builder
	err := e.r.Logs(context.Background(), id, logs.ReadOptions{Tail: -1}, func(en logs.Entry) error {
		b.WriteString(en.Log)
		return nil
	})
	if err != nil {
		e.t.Fatalf("logs: %v", err)
	}
	return b.String()
}

func (e *env) exec(id string, args ...string) (int, string) {
	e.t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := e.r.Exec(ctx, id, ExecOptions{Args: args, Stdout: &out, Stderr: &out})
	if err != nil {
		e.t.Fatalf("exec %v: %v", args, err)
	}
	return code, out.String()
}

// waitLog polls the container's log until it contains want.
func (e *env) waitLog(id, want string) string {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l := e.logs(id)
		if strings.Contains(l, want) {
			return l
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("log never showed %q; log:\n%s", want, l)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestImageDefaultsAndOverrides(t *testing.T) {
	e := newEnv(t)
	ex, out := e.run(Spec{Cmd: []string{"env"}, Env: []string{"A=1"}})
	if ex.Code != 0 {
		t.Fatalf("exit %d, log %q", ex.Code, out)
	}
	for _, want := range []string{"A=1", "FROM_IMAGE=yes", "PATH=/bin", "HOME=/root", "HOSTNAME="} {
		if !strings.Contains(out, want) {
			t.Errorf("env lacks %s:\n%s", want, out)
		}
	}
	ex, out = e.run(Spec{Entrypoint: []string{"/bin/helper", "pwd"}, WorkingDir: "/made/by/docker"})
	if ex.Code != 0 || strings.TrimSpace(out) != "/made/by/docker" {
		t.Fatalf("working dir: exit %d, %q", ex.Code, out)
	}
	ex, _ = e.run(Spec{Cmd: []string{"exit", "3"}})
	if ex.Code != 3 {
		t.Fatalf("exit code %d, want 3", ex.Code)
	}
}

func TestNamespacesHostnameUserAndPID1(t *testing.T) {
	e := newEnv(t)
	_, out := e.run(Spec{Hostname: "web-1", Cmd: []string{"hostname"}})
	if strings.TrimSpace(out) != "web-1" {
		t.Errorf("hostname %q, want web-1", out)
	}
	for _, tc := range []struct{ user, want string }{
		{"", "uid=0 gid=0 groups="},
		{"app", "uid=1000 gid=1000 groups=50"},
		{"1000:50", "uid=1000 gid=50 groups="},
		{"app:staff", "uid=1000 gid=50 groups="},
		{"4242", "uid=4242 gid=0 groups="},
	} {
		_, out := e.run(Spec{User: tc.user, Cmd: []string{"id"}})
		if strings.TrimSpace(out) != tc.want {
			t.Errorf("user %q: id says %q, want %q", tc.user, strings.TrimSpace(out), tc.want)
		}
	}
	c := e.create(Spec{User: "nosuchuser", Cmd: []string{"id"}})
	if err := e.r.Start(c.ID); err == nil || !strings.Contains(err.Error(), "unable to find user nosuchuser") {
		t.Errorf("unknown user: err %v", err)
	}

	c = e.start(Spec{Cmd: []string{"sleep", "inf"}})
	_, ps := e.exec(c.ID, "ps")
	var initLine, cmdLine string
	for _, l := range strings.Split(ps, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		if f[0] == "1" {
			initLine = l
		}
		if f[1] == "1" && strings.Contains(l, "sleep inf") {
			cmdLine = l
		}
	}
	if !strings.Contains(initLine, "shoal-init") {
		t.Errorf("PID 1 is not shoal-init:\n%s", ps)
	}
	if cmdLine == "" {
		t.Errorf("the command is not a child of PID 1:\n%s", ps)
	}
	_, nets := e.exec(c.ID, "ls", "/sys/class/net")
	if strings.TrimSpace(nets) != "lo" {
		t.Errorf("network none: interfaces %q, want only lo", nets)
	}
}

func TestNetworkModes(t *testing.T) {
	e := newEnv(t)
	// Other tests may add and remove links meanwhile: the links the host
	// has both before and after must all be seen from the container.
	before, _ := os.ReadDir("/sys/class/net")
	_, out := e.run(Spec{Network: Network{Mode: NetworkHost}, Cmd: []string{"ls", "/sys/class/net"}})
	after, _ := os.ReadDir("/sys/class/net")
	seen := map[string]bool{}
	for _, l := range strings.Fields(out) {
		seen[l] = true
	}
	stayed := map[string]bool{}
	for _, d := range after {
		stayed[d.Name()] = true
	}
	for _, d := range before {
		if stayed[d.Name()] && !seen[d.Name()] {
			t.Errorf("host network: container sees %q, without the host's %s", out, d.Name())
		}
	}
	if len(seen) < 2 {
		t.Errorf("host network: container sees only %q", out)
	}

	ns := "shl-rt-" + randHex(3)
	if b, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, b)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if b, err := exec.Command("ip", "-n", ns, "link", "add", "shl-rt0", "type", "veth", "peer", "name", "shl-rt1").CombinedOutput(); err != nil {
		t.Fatalf("add veth: %v %s", err, b)
	}
	_, out = e.run(Spec{Network: Network{Mode: NetworkNamespace, Path: "/run/netns/" + ns}, Cmd: []string{"ls", "/sys/class/net"}})
	if !strings.Contains(out, "shl-rt0") {
		t.Errorf("prepared namespace: container sees %q", out)
	}
	_, out = e.run(Spec{Network: Network{ExtraHosts: []string{"db:10.1.2.3"}, DNS: []string{"10.0.0.2"}, DNSSearch: []string{"example.org"}}, Cmd: []string{"cat", "/etc/hosts"}})
	if !strings.Contains(out, "10.1.2.3\tdb") {
		t.Errorf("extra host missing from /etc/hosts:\n%s", out)
	}
	_, out = e.run(Spec{Network: Network{DNS: []string{"10.0.0.2"}, DNSSearch: []string{"example.org"}}, Cmd: []string{"cat", "/etc/resolv.conf"}})
	if !strings.Contains(out, "nameserver 10.0.0.2") || !strings.Contains(out, "search example.org") {
		t.Errorf("resolv.conf:\n%s", out)
	}
}

func TestInitReapsZombies(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"zombie"}})
	l := e.waitLog(c.ID, "orphan")
	var orphan int
	fmt.Sscanf(l[strings.Index(l, "orphan"):], "orphan %d", &orphan)
	if orphan == 0 {
		t.Fatalf("no orphan pid in %q", l)
	}
	// The orphan lives 0.2 s; once it has exited PID 1 must have reaped it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, ps := e.exec(c.ID, "ps")
		gone := true
		for _, line := range strings.Split(ps, "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == strconv.Itoa(orphan) {
				gone = false
				if f[2] == "Z" && time.Now().After(deadline) {
					t.Fatalf("orphan %d stayed a zombie:\n%s", orphan, ps)
				}
			}
			if len(f) >= 3 && f[2] == "Z" && time.Now().After(deadline) {
				t.Fatalf("a zombie remains:\n%s", ps)
			}
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d still present:\n%s", orphan, ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStopForwardsSignalAndEscalates(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"trap"}})
	e.waitLog(c.ID, "ready")
	begin := time.Now()
	if err := e.r.Stop(context.Background(), c.ID, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("stop of a command that handles SIGTERM took %v", d)
	}
	ex, _ := e.r.Wait(context.Background(), c.ID)
	if ex.Code != 0 || !strings.Contains(e.logs(c.ID), "got SIGTERM") {
		t.Errorf("exit %d, log %q: SIGTERM did not reach the command", ex.Code, e.logs(c.ID))
	}

	c = e.start(Spec{Cmd: []string{"trap", "ignore"}, StopSignal: "SIGUSR1"})
	e.waitLog(c.ID, "ready")
	grace := 700 * time.Millisecond
	begin = time.Now()
	if err := e.r.Stop(context.Background(), c.ID, &grace); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	ex, _ = e.r.Wait(context.Background(), c.ID)
	if ex.Code != 137 {
		t.Errorf("exit %d after ignoring the stop signal, want 137", ex.Code)
	}
	if took < grace {
		t.Errorf("killed after %v, before the %v grace period", took, grace)
	}
	if !strings.Contains(e.logs(c.ID), "got SIGUSR1") {
		t.Errorf("stop signal SIGUSR1 not delivered: %q", e.logs(c.ID))
	}
	got, _ := e.r.Inspect(c.ID)
	if got.State != Exited || got.FinishedAt.IsZero() {
		t.Errorf("state %s finished %v", got.State, got.FinishedAt)
	}
}

func TestCgroupLimitsAndOOM(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"sleep", "inf"}, Resources: Resources{NanoCPUs: 1e8, MemoryLimit: 50 << 20, PidsLimit: 64}})
	cg, err := cgroups.Load(e.parent, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, p := range cg.Paths() {
		for _, f := range []string{"cpu.cfs_quota_us", "cpu.cfs_period_us", "memory.limit_in_bytes", "pids.max", "cpu.max", "memory.max"} {
			if b, err := os.ReadFile(filepath.Join(p, f)); err == nil {
				files[f] = strings.TrimSpace(string(b))
			}
		}
	}
	if cgroups.Mode() != "v2" {
		want := map[string]string{"cpu.cfs_quota_us": "10000", "cpu.cfs_period_us": "100000", "memory.limit_in_bytes": strconv.Itoa(50 << 20), "pids.max": "64"}
		for f, v := range want {
			if files[f] != v {
				t.Errorf("%s = %q, want %q", f, files[f], v)
			}
		}
	} else if files["cpu.max"] != "10000 100000" || files["memory.max"] != strconv.Itoa(50<<20) {
		t.Errorf("v2 files %v", files)
	}
	st, err := e.r.Stats(c.ID)
	if err != nil || st.MemoryUsage == 0 || st.PidsCurrent < 2 {
		t.Errorf("stats %+v, %v: want memory use and at least init+command", st, err)
	}

	ex, log := e.run(Spec{Cmd: []string{"alloc", "200"}, Resources: Resources{MemoryLimit: 50 << 20}})
	if ex.Code != 137 || !ex.OOMKilled {
		t.Errorf("alloc 200M under 50M: exit %d oom %v (log %q), want 137 and OOMKilled", ex.Code, ex.OOMKilled, log)
	}
	// A pids limit refuses forks: the kernel counts each refusal in
	// pids.events. The helper's children are Go programs with several
	// threads each, so how many start varies; that 50 cannot is certain.
	c = e.start(Spec{Cmd: []string{"sleep", "inf"}, Resources: Resources{PidsLimit: 16}})
	_, out := e.exec(c.ID, "fork", "50", "1")
	if strings.Contains(out, "started 50") {
		t.Errorf("pids limit 16 let 50 processes start: %q", out)
	}
	cg, err = cgroups.Load(e.parent, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	refused := ""
	for _, p := range cg.Paths() {
		if b, err := os.ReadFile(filepath.Join(p, "pids.events")); err == nil {
			refused = strings.TrimSpace(string(b))
		}
	}
	if refused == "" || refused == "max 0" {
		t.Errorf("pids.events = %q: no fork was refused", refused)
	}
}

func TestLogsRotateFollowTail(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"log", "3000", "100"}, Log: LogConfig{MaxSize: 64 << 10, MaxFiles: 3}})
	if _, err := e.r.Wait(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.opts.Root, "containers", c.ID)
	matches, _ := filepath.Glob(filepath.Join(dir, logFile+"*"))
	if len(matches) != 3 {
		t.Errorf("log files %v, want 3", matches)
	}
	for _, m := range matches {
		if fi, _ := os.Stat(m); fi.Size() > 64<<10 {
			t.Errorf("%s is %d bytes, over the 64 KiB limit", m, fi.Size())
		}
	}
	var tail []string
	_ = e.r.Logs(context.Background(), c.ID, logs.ReadOptions{Tail: 2}, func(en logs.Entry) error {
		tail = append(tail, en.Log)
		return nil
	})
	if len(tail) != 2 || !strings.HasPrefix(tail[1], "2999 ") {
		t.Errorf("tail 2 = %q", tail)
	}

	c = e.start(Spec{Cmd: []string{"trap"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		done <- e.r.Logs(ctx, c.ID, logs.ReadOptions{Follow: true, Tail: -1}, func(en logs.Entry) error {
			got <- en.Log
			return nil
		})
	}()
	if l := <-got; l != "ready\n" {
		t.Errorf("first followed line %q", l)
	}
	_ = e.r.Kill(c.ID, unix.SIGTERM)
	if l := <-got; !strings.Contains(l, "got SIGTERM") {
		t.Errorf("followed line after kill %q", l)
	}
	if err := <-done; err != nil {
		t.Errorf("follow ended with %v", err)
	}
	if ctx.Err() != nil {
		t.Error("follow did not end when the container exited")
	}
}

func TestMounts(t *testing.T) {
	e := newEnv(t)
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "in.txt"), []byte("from-host"), 0o644)
	c := e.start(Spec{Mounts: []Mount{
		{Type: MountBind, Source: host, Target: "/rw"},
		{Type: MountBind, Source: host, Target: "/ro", ReadOnly: true},
		{Type: MountVolume, Source: "vol1", Target: "/data"},
		{Type: MountTmpfs, Target: "/scratch", TmpfsSize: 1 << 20},
	}})
	if code, out := e.exec(c.ID, "cat", "/ro/in.txt"); code != 0 || out != "from-host" {
		t.Errorf("bind read: %d %q", code, out)
	}
	if code, _ := e.exec(c.ID, "write", "/rw/out.txt", "from-container"); code != 0 {
		t.Error("write to rw bind failed")
	}
	if b, _ := os.ReadFile(filepath.Join(host, "out.txt")); string(b) != "from-container" {
		t.Errorf("host sees %q", b)
	}
	if code, _ := e.exec(c.ID, "write", "/ro/x", "y"); code == 0 {
		t.Error("write to a read-only bind succeeded")
	}
	if code, out := e.exec(c.ID, "cat", "/data/seed.txt"); code != 0 || out != "from-image\n" {
		t.Errorf("volume not filled from the image: %d %q", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(e.opts.Root, "volumes", "vol1", "_data", "seed.txt")); string(b) != "from-image\n" {
		t.Errorf("volume dir holds %q", b)
	}
	_, mounts := e.exec(c.ID, "mounts")
	if !regexpMatch(`/scratch .* - tmpfs tmpfs .*size=1024k`, mounts) {
		t.Errorf("tmpfs /scratch with size 1M not in mountinfo:\n%s", mounts)
	}

	_, err := e.r.Create(Spec{Image: testImage, Mounts: []Mount{{Type: MountBind, Source: "/does/not/exist", Target: "/x"}}})
	if err == nil || !strings.Contains(err.Error(), "bind source path does not exist: /does/not/exist") {
		t.Errorf("missing bind source: %v", err)
	}
	if len(e.r.List()) != 1 {
		t.Errorf("a failed create left a container: %v", e.r.List())
	}
}

func TestHardening(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"sleep", "inf"}})
	_, caps := e.exec(c.ID, "caps")
	want, _ := spec.CapMask(spec.DefaultCapabilities)
	if !strings.Contains(caps, fmt.Sprintf("CapBnd:\t%016x", want)) {
		t.Errorf("bounding set is not Docker's default %016x:\n%s", want, caps)
	}
	if !strings.Contains(caps, "NoNewPrivs:\t1") {
		t.Errorf("no_new_privs not set:\n%s", caps)
	}
	// Masked files read as empty (/dev/null over them), masked dirs list
	// nothing (an empty tmpfs); those this kernel lacks are skipped.
	masked := 0
	for _, p := range spec.DefaultMaskedPaths {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		cmd := "cat"
		if fi.IsDir() {
			cmd = "ls"
		}
		if code, out := e.exec(c.ID, cmd, p); code != 0 || strings.TrimSpace(out) != "" {
			t.Errorf("%s not masked: %d %q", p, code, out)
		}
		masked++
	}
	if masked < 2 {
		t.Errorf("only %d masked paths exist on this host; the test proves little", masked)
	}
	if code, _ := e.exec(c.ID, "write", "/proc/sys/kernel/hostname", "pwned"); code == 0 {
		t.Error("/proc/sys is writable")
	}
	if code, _ := e.exec(c.ID, "write", "/proc/sysrq-trigger", "h"); code == 0 {
		t.Error("/proc/sysrq-trigger is writable")
	}
	_, devs := e.exec(c.ID, "ls", "/dev")
	for _, d := range strings.Fields(devs) {
		switch d {
		case "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue", "fd", "stdin", "stdout", "stderr", "core":
		default:
			t.Errorf("unexpected /dev entry %q", d)
		}
	}
	// CAP_MKNOD is in the default set, but the devices cgroup refuses a
	// node for a host block device, as Docker's default rules do.
	if code, out := e.exec(c.ID, "mknod", "/tmp/sda", "8", "0"); code == 0 || !strings.Contains(out, "operation not permitted") {
		t.Errorf("mknod of a block device inside the container: %d %q", code, out)
	}
	if code, out := e.exec(c.ID, "tryopen", "/dev/null"); code != 0 {
		t.Errorf("/dev/null: %s", out)
	}
}

func TestDiff(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"sleep", "inf"}})
	e.exec(c.ID, "write", "/new/file.txt", "x")
	e.exec(c.ID, "write", "/data/seed.txt", "changed")
	if code, out := e.exec(c.ID, "rm", "/etc/group"); code != 0 {
		t.Fatalf("rm: %s", out)
	}
	changes, err := e.r.Diff(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]rootfs.Kind{}
	for _, ch := range changes {
		got[ch.Path] = ch.Kind
	}
	want := map[string]rootfs.Kind{"/new": rootfs.Added, "/new/file.txt": rootfs.Added, "/data": rootfs.Changed, "/data/seed.txt": rootfs.Changed, "/etc": rootfs.Changed, "/etc/group": rootfs.Deleted}
	for p, k := range want {
		if got[p] != k {
			t.Errorf("%s: %q, want %q (all: %v)", p, got[p], k, changes)
		}
	}
}

func TestExec(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"sleep", "inf"}, Env: []string{"BASE=1"}})
	var out bytes.Buffer
	code, err := e.r.Exec(context.Background(), c.ID, ExecOptions{Args: []string{"env"}, Env: []string{"EXTRA=2"}, User: "app", Stdout: &out})
	if err != nil || code != 0 {
		t.Fatalf("exec env: %d %v", code, err)
	}
	if !strings.Contains(out.String(), "BASE=1") || !strings.Contains(out.String(), "EXTRA=2") || !strings.Contains(out.String(), "HOME=/home/app") {
		t.Errorf("exec env:\n%s", out.String())
	}
	if code, _ := e.exec(c.ID, "exit", "7"); code != 7 {
		t.Errorf("exec exit code %d, want 7", code)
	}
	if _, err := e.r.Exec(context.Background(), c.ID, ExecOptions{Args: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), "executable file not found") {
		t.Errorf("missing executable: %v", err)
	}
	out.Reset()
	code, err = e.r.Exec(context.Background(), c.ID, ExecOptions{Args: []string{"tty"}, TTY: true, Stdout: &out})
	if err != nil || code != 0 || !strings.Contains(out.String(), "/dev/pts/") {
		t.Errorf("exec with tty: %d %v %q", code, err, out.String())
	}
}

func TestStartFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	c := e.create(Spec{Cmd: []string{"/no/such/command"}})
	err := e.r.Start(c.ID)
	if err == nil || !strings.Contains(err.Error(), `"/no/such/command": no such file or directory`) {
		t.Fatalf("start of a missing command: %v", err)
	}
	if _, err := cgroups.Load(e.parent, c.ID); err == nil {
		t.Error("a failed start left its cgroup")
	}
	got, _ := e.r.Inspect(c.ID)
	if got.State != Created || got.Error == "" {
		t.Errorf("after a failed start: state %s error %q", got.State, got.Error)
	}
	if _, err := e.r.Create(Spec{Image: "nosuch:tag"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no such image: nosuch:tag") {
		t.Errorf("missing image: %v", err)
	}
}

func TestRemoveLeavesNothing(t *testing.T) {
	e := newEnv(t)
	c := e.start(Spec{Cmd: []string{"sleep", "inf"}, Mounts: []Mount{{Type: MountTmpfs, Target: "/t"}}})
	got, _ := e.r.Inspect(c.ID)
	pid := got.Pid
	if err := e.r.Remove(context.Background(), c.ID, false); !errors.Is(err, ErrConflict) {
		t.Errorf("remove of a running container without force: %v", err)
	}
	if err := e.r.Remove(context.Background(), c.ID, true); err != nil {
		t.Fatal(err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(c.ID)) {
		t.Error("a mount of the container remains on the host")
	}
	var left []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && strings.Contains(p, c.ID) {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("cgroups remain: %v", left)
	}
	if _, err := os.Stat(filepath.Join(e.opts.Root, "containers", c.ID)); !os.IsNotExist(err) {
		t.Error("container directory remains")
	}
	if err := unix.Kill(pid, 0); err == nil && procStartTime(pid) == got.PidStart {
		t.Error("the container's init still runs")
	}
	if ents, _ := os.ReadDir(e.opts.RunDir); len(ents) != 0 {
		t.Errorf("run dir holds %v", ents)
	}
}

// TestReadoptAfterRestart starts a container from another process, which
// then exits; a new Runtime must find it running, exec into it, stop it and
// record its exit.
func TestReadoptAfterRestart(t *testing.T) {
	e := newEnv(t)
	e.r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_START_CHILD="+e.opts.Root+"|"+e.opts.RunDir+"|"+e.opts.InitPath+"|"+e.opts.CgroupParent)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	e.r = e.open()
	c, err := e.r.Inspect(id)
	if err != nil {
		t.Fatalf("started container not found: %v (child said %q)", err, out)
	}
	if c.State != Running {
		t.Fatalf("state %s after restart, want running", c.State)
	}
	if code, out := e.exec(id, "echo", "alive"); code != 0 || out != "alive\n" {
		t.Errorf("exec after re-adoption: %d %q", code, out)
	}
	e.waitLog(id, "ready")
	if err := e.r.Stop(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
	ex, _ := e.r.Wait(context.Background(), id)
	if ex.Code != 0 || !strings.Contains(e.logs(id), "got SIGTERM") {
		t.Errorf("adopted container exit %d log %q", ex.Code, e.logs(id))
	}
	if _, err := cgroups.Load(e.parent, id); err == nil {
		t.Error("cgroup of the adopted container remains after its exit")
	}
}

func TestMain(m *testing.M) {
	if v := os.Getenv("SHOAL_TEST_START_CHILD"); v != "" {
		os.Exit(startChild(v))
	}
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

func startChild(v string) int {
	p := strings.Split(v, "|")
	r, err := Open(Options{Root: p[0], RunDir: p[1], InitPath: p[2], CgroupParent: p[3]})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c, err := r.Create(Spec{Image: testImage, Cmd: []string{"trap"}})
	if err == nil {
		err = r.Start(c.ID)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(c.ID)
	return 0
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
