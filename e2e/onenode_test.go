// Package e2e runs shoal as a user would: the real binaries, started by
// `shoal swarm init`, driven by the CLI.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
)

// node is one shoal node on this machine, with its own dirs and ports.
type node struct {
	t       *testing.T
	bin     string
	dataDir string
	runDir  string
	addr    string
}

func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("shoal-e2e-bin-%d", os.Getpid()))
	if _, err := os.Stat(filepath.Join(dir, "shoal-init")); err == nil {
		return dir
	}
	for name, pkg := range map[string]string{"shoal": "./cmd/shoal", "shoal-manager": "./cmd/manager", "shoal-init": "./cmd/init"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newNode(t *testing.T) *node {
	testutil.RequiresRoot(t)
	runDir, err := os.MkdirTemp("/run", "shl-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, bin: buildBinaries(t), dataDir: filepath.Join(t.TempDir(), "data"), runDir: runDir}
	// Raft takes the listen port + 1; find a pair that is free.
	for {
		p := freePort(t)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			l.Close()
			n.addr = fmt.Sprintf("127.0.0.1:%d", p)
			break
		}
	}
	t.Cleanup(n.cleanup)
	return n
}

// shoal runs the CLI against this node and returns its stdout; stderr is
// added to the failure message.
func (n *node) shoal(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(n.bin, "shoal"), append([]string{"-H", "unix://" + filepath.Join(n.runDir, "shoal.sock")}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("shoal %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (n *node) must(args ...string) string {
	n.t.Helper()
	out, err := n.shoal(args...)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// managerPid finds this node's shoal-manager process.
func (n *node) managerPid() int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "shoal-manager" && strings.Contains(string(b), n.dataDir) {
			return pid
		}
	}
	return 0
}

func (n *node) cleanup() {
	if pid := n.managerPid(); pid != 0 {
		_, _ = n.shoal("swarm", "leave", "--force")
		deadline := time.Now().Add(20 * time.Second)
		for n.managerPid() != 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if pid := n.managerPid(); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Whatever a failed test left: containers' inits, cgroups.
	killInits(n.dataDir)
	os.RemoveAll(n.runDir)
}

// killInits kills the shoal-init processes of containers under dataDir.
func killInits(dataDir string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.HasPrefix(string(b), "shoal-init\x00"+dataDir) {
			pid, _ := strconv.Atoi(e.Name())
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// importHelperImage imports the test image into the running node, as a
// user would with `shoal image import`.
func (n *node) importHelperImage(ref string) {
	n.t.Helper()
	tar := testutil.HelperRootfs(n.t, nil)
	n.must("image", "import", "--change", `CMD ["/bin/helper", "serve", "80"]`, "--change", "ENV PATH=/bin", tar, ref)
	if out := n.must("image", "ls"); !strings.Contains(out, strings.Split(ref, ":")[0]) {
		n.t.Fatalf("imported image not listed:\n%s", out)
	}
}

// containers reads the runtime's records of this node's containers.
type record struct {
	ID       string                             `json:"id"`
	Name     string                             `json:"name"`
	State    string                             `json:"state"`
	Pid      int                                `json:"pid"`
	PidStart uint64                             `json:"pid_start"`
	Spec     struct{ Labels map[string]string } `json:"spec"`
}

func (n *node) containers() []record {
	var out []record
	dirs, _ := filepath.Glob(filepath.Join(n.dataDir, "containers", "*", "container.json"))
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r record
		if json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

func (n *node) running() []record {
	var out []record
	for _, c := range n.containers() {
		if c.State == "running" {
			out = append(out, c)
		}
	}
	return out
}

func poll(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// psRows parses `service ps` into rows of fields by column.
func psRows(out string) []map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 1 {
		return nil
	}
	header := lines[0]
	cols := []string{"ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"}
	starts := make([]int, len(cols))
	for i, c := range cols {
		starts[i] = strings.Index(header, c)
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		r := map[string]string{}
		for i, c := range cols {
			if starts[i] < 0 || starts[i] >= len(l) {
				continue
			}
			end := len(l)
			if i+1 < len(cols) && starts[i+1] >= 0 && starts[i+1] < len(l) {
				end = starts[i+1]
			}
			r[c] = strings.TrimSpace(l[starts[i]:end])
		}
		rows = append(rows, r)
	}
	return rows
}

func cgroupValue(t *testing.T, controller, id, file string) string {
	matches, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", controller, "*", id, file))
	if len(matches) == 0 {
		matches, _ = filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", id, file))
	}
	if len(matches) == 0 {
		return ""
	}
	b, _ := os.ReadFile(matches[0])
	return strings.TrimSpace(string(b))
}

func TestOneNodeSwarmAsAUser(t *testing.T) {
	n := newNode(t)
	out := n.must("swarm", "init", "--data-dir", n.dataDir, "--run-dir", n.runDir, "--listen-addr", n.addr, "--advertise-addr", n.addr)
	if !strings.Contains(out, "Swarm initialized: current node (") || !strings.Contains(out, "shoal swarm join --token SHL-1-") {
		t.Fatalf("swarm init said:\n%s", out)
	}
	n.importHelperImage("shoal-e2e/web:latest")

	seed, err := os.ReadFile("../../shared/compose/getstartedlab.yml")
	if err != nil {
		t.Fatalf("the seed stack: %v", err)
	}
	compose := filepath.Join(t.TempDir(), "docker-compose.yml")
	os.WriteFile(compose, bytes.Replace(seed, []byte("zoeminghong/docker-demp:v1.0.0"), []byte("shoal-e2e/web:latest"), 1), 0o644)
	out = n.must("stack", "deploy", "-c", compose, "getstartedlab")
	if !strings.Contains(out, "Creating service getstartedlab_web") {
		t.Errorf("stack deploy said:\n%s", out)
	}

	var rows []map[string]string
	poll(t, "5 tasks running", 60*time.Second, func() bool {
		out, err := n.shoal("service", "ps", "getstartedlab_web")
		if err != nil {
			return false
		}
		rows = psRows(out)
		running := 0
		for _, r := range rows {
			if strings.HasPrefix(r["CURRENT STATE"], "Running") && r["DESIRED STATE"] == "Running" {
				running++
			}
		}
		return running == 5
	})
	names := map[string]bool{}
	for _, r := range rows {
		names[r["NAME"]] = true
	}
	for i := 1; i <= 5; i++ {
		if !names[fmt.Sprintf("getstartedlab_web.%d", i)] {
			t.Errorf("no task getstartedlab_web.%d in:\n%v", i, rows)
		}
	}
	// Every task's output, prefixed with the task, as `docker service logs`.
	// A task is Running once its process started, a moment before the
	// line it prints reaches its log.
	var logs string
	complete := func() bool {
		for i := 1; i <= 5; i++ {
			if !strings.Contains(logs, fmt.Sprintf("getstartedlab_web.%d.", i)) || !strings.Contains(logs, "listening") {
				return false
			}
		}
		return true
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		logs = n.must("service", "logs", "getstartedlab_web")
		if complete() || time.Now().After(end) {
			break
		}
	}
	if !complete() {
		t.Errorf("service logs lack a task's output:\n%s", logs)
	}
	cs := n.running()
	if len(cs) != 5 {
		t.Fatalf("%d containers running, want 5", len(cs))
	}
	for _, c := range cs {
		if q := cgroupValue(t, "cpu", c.ID, "cpu.cfs_quota_us"); q != "10000" {
			t.Errorf("container %s: cpu quota %q, want 10000", c.Name, q)
		}
		if m := cgroupValue(t, "memory", c.ID, "memory.limit_in_bytes"); m != strconv.Itoa(50<<20) {
			t.Errorf("container %s: memory limit %q, want %d", c.Name, m, 50<<20)
		}
	}

	// The published port answers on the node and spreads over the tasks.
	hosts := map[string]bool{}
	poll(t, "port 4000 answering", 20*time.Second, func() bool {
		resp, err := httpGet("http://127.0.0.1:4000/")
		return err == nil && strings.Contains(resp, "hostname=")
	})
	for i := 0; i < 10; i++ {
		resp, err := httpGet("http://127.0.0.1:4000/")
		if err != nil {
			t.Fatalf("request %d to :4000: %v", i, err)
		}
		for _, f := range strings.Fields(resp) {
			if strings.HasPrefix(f, "hostname=") {
				hosts[f] = true
			}
		}
	}
	if len(hosts) < 3 {
		t.Errorf("10 requests to :4000 were answered by %d tasks (%v), want at least 3", len(hosts), hosts)
	}

	// Kill one task's process: the init reports the exit, the task fails
	// (on-failure policy) and a new task takes its slot; the old one shows
	// as history.
	victim := cs[0]
	slot := victim.Spec.Labels["com.docker.swarm.task.name"]
	if err := syscall.Kill(victim.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "slot of the killed task running again with history", 60*time.Second, func() bool {
		out, err := n.shoal("service", "ps", "getstartedlab_web")
		if err != nil {
			return false
		}
		history, running := false, false
		for _, r := range psRows(out) {
			if r["NAME"] == `\_ `+slot {
				history = true
			}
			if r["NAME"] == slot && strings.HasPrefix(r["CURRENT STATE"], "Running") {
				running = true
			}
		}
		return history && running
	})

	// A changed environment rolls every task.
	before := map[string]bool{}
	for _, c := range n.running() {
		before[c.ID] = true
	}
	changed := bytes.Replace(seed, []byte("zoeminghong/docker-demp:v1.0.0"), []byte("shoal-e2e/web:latest\n    environment:\n      - VERSION=2"), 1)
	os.WriteFile(compose, changed, 0o644)
	n.must("stack", "deploy", "-c", compose, "getstartedlab")
	poll(t, "all 5 tasks replaced by the update", 120*time.Second, func() bool {
		cs := n.running()
		if len(cs) != 5 {
			return false
		}
		for _, c := range cs {
			if before[c.ID] {
				return false
			}
		}
		return true
	})

	// kill -9 the manager and start it again: services and tasks are
	// still there and running containers were not restarted.
	pre := map[string]uint64{}
	for _, c := range n.running() {
		pre[c.ID] = c.PidStart
	}
	mpid := n.managerPid()
	if mpid == 0 {
		t.Fatal("no shoal-manager process")
	}
	syscall.Kill(mpid, syscall.SIGKILL)
	poll(t, "manager gone", 10*time.Second, func() bool { return n.managerPid() == 0 })
	restart := exec.Command(filepath.Join(n.bin, "shoal-manager"), "--data-dir", n.dataDir, "--run-dir", n.runDir, "--listen-addr", n.addr, "--advertise-addr", n.addr)
	logf, _ := os.OpenFile(filepath.Join(n.dataDir, "manager-restart.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	restart.Stdout, restart.Stderr = logf, logf
	restart.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := restart.Start(); err != nil {
		t.Fatal(err)
	}
	go restart.Wait()
	poll(t, "manager answering again", 30*time.Second, func() bool {
		_, err := n.shoal("service", "ls")
		return err == nil
	})
	// A status the agent sent just before the kill may still be on its
	// way; the adopted containers are reported again after the restart.
	poll(t, "service ls showing 5/5 after the restart", 30*time.Second, func() bool {
		out, err := n.shoal("service", "ls")
		return err == nil && strings.Contains(out, "getstartedlab_web") && strings.Contains(out, "5/5")
	})
	time.Sleep(2 * time.Second) // give a wrongly restarting agent time to show it
	for _, c := range n.running() {
		if start, ok := pre[c.ID]; !ok || start != c.PidStart {
			t.Errorf("container %s was restarted by the manager's restart", c.Name)
		}
	}

	// stack rm leaves no container, mount or cgroup.
	out = n.must("stack", "rm", "getstartedlab")
	if !strings.Contains(out, "Removing service getstartedlab_web") {
		t.Errorf("stack rm said:\n%s", out)
	}
	poll(t, "no container left", 60*time.Second, func() bool { return len(n.containers()) == 0 })
	for _, c := range cs {
		if v := cgroupValue(t, "memory", c.ID, "memory.limit_in_bytes"); v != "" {
			t.Errorf("cgroup of %s left after stack rm", c.Name)
		}
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); bytes.Contains(mi, []byte(n.dataDir)) {
		t.Error("a mount under the data dir is left")
	}

	// swarm leave --force: no daemon, no state.
	n.must("swarm", "leave", "--force")
	poll(t, "manager exited", 30*time.Second, func() bool { return n.managerPid() == 0 })
	if _, err := os.Stat(n.dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir %s left after swarm leave", n.dataDir)
	}
	_ = context.Background
}

func TestBadInput(t *testing.T) {
	n := newNode(t)
	n.must("swarm", "init", "--data-dir", n.dataDir, "--run-dir", n.runDir, "--listen-addr", n.addr, "--advertise-addr", n.addr)
	n.importHelperImage("shoal-e2e/web:latest")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	cases := []struct{ name, body, want string }{
		{"broken.yml", "services:\n  web:\n    image: [unclosed\n", "broken.yml"},
		{"memory.yml", "services:\n  web:\n    image: shoal-e2e/web:latest\n    deploy:\n      resources:\n        limits:\n          memory: 50X\n", `services.web.deploy.resources.limits.memory: invalid size "50X"`},
	}
	for _, c := range cases {
		_, err := n.shoal("stack", "deploy", "-c", write(c.name, c.body), "bad")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to mention %q", c.name, err, c.want)
		}
	}
	if out := n.must("stack", "ls"); strings.Contains(out, "bad") {
		t.Errorf("a refused deploy left a stack:\n%s", out)
	}
	// Docker prints this on stderr and exits 0.
	rm := exec.Command(filepath.Join(n.bin, "shoal"), "-H", "unix://"+filepath.Join(n.runDir, "shoal.sock"), "stack", "rm", "nosuchstack")
	if out, _ := rm.CombinedOutput(); !strings.Contains(string(out), "Nothing found in stack: nosuchstack") {
		t.Errorf("unknown stack: %q", out)
	}
	var err error
	// A port another stack publishes.
	one := write("one.yml", "services:\n  web:\n    image: shoal-e2e/web:latest\n    ports:\n      - '4100:80'\n")
	n.must("stack", "deploy", "-c", one, "one")
	_, err = n.shoal("stack", "deploy", "-c", one, "two")
	if err == nil || !strings.Contains(err.Error(), "port '4100' is already in use by service 'one_web'") {
		t.Errorf("taken port: %v", err)
	}
	if out := n.must("stack", "ls"); strings.Contains(out, "two") {
		t.Errorf("the refused stack exists:\n%s", out)
	}
	// A port a program outside the swarm listens on.
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	three := write("three.yml", fmt.Sprintf("services:\n  web:\n    image: shoal-e2e/web:latest\n    ports:\n      - '%d:80'\n", port))
	_, err = n.shoal("stack", "deploy", "-c", three, "three")
	if want := fmt.Sprintf("port %d/tcp is already in use on node", port); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("port of another program: %v, want it to say %q", err, want)
	}
	if out := n.must("stack", "ls"); strings.Contains(out, "three") {
		t.Errorf("the refused stack exists:\n%s", out)
	}
	// A mode host port is bound where the task lands: the task fails,
	// and says which port.
	four := write("four.yml", fmt.Sprintf("services:\n  web:\n    image: shoal-e2e/web:latest\n    ports:\n      - target: 80\n        published: %d\n        mode: host\n", port))
	n.must("stack", "deploy", "-c", four, "four")
	want := fmt.Sprintf("port %d/tcp is already in use on this node", port)
	poll(t, "the mode host task failing on its port", 30*time.Second, func() bool {
		out, _ := n.shoal("service", "ps", "--no-trunc", "four_web")
		return strings.Contains(out, want)
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("shoal-e2e-bin-%d", os.Getpid())))
	testutil.Cleanup()
	os.Exit(code)
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
