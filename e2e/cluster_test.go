package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testcluster"
	"github.com/shoal-dev/shoal/internal/testutil"
)

// member is one shoal manager of a testcluster node.
type member struct {
	t    *testing.T
	node *testcluster.Node
	bin  string
	proc *testcluster.Process
}

func (mb *member) addr() string { return mb.node.Addr.String() + ":2377" }

func (mb *member) sock() string { return "unix://" + filepath.Join(mb.node.RunDir, "shoal.sock") }

// start runs shoal-manager on the node with extra flags (--init, or
// --join and --token).
func (mb *member) start(extra ...string) {
	args := append([]string{
		"--data-dir", mb.node.DataDir, "--run-dir", mb.node.RunDir,
		"--listen-addr", mb.addr(), "--advertise-addr", mb.addr(),
		"--init-path", filepath.Join(mb.bin, "shoal-init"),
		"--cgroup-parent", "shoal-e2e-" + filepath.Base(mb.node.NetnsPath),
	}, extra...)
	mb.proc = mb.node.Start(filepath.Join(mb.bin, "shoal-manager"), args...)
}

// shoal runs the CLI against this member's socket, in its namespace.
func (mb *member) shoal(args ...string) (string, error) {
	return mb.node.Run(filepath.Join(mb.bin, "shoal"), append([]string{"-H", mb.sock()}, args...)...)
}

func (mb *member) must(args ...string) string {
	mb.t.Helper()
	out, err := mb.shoal(args...)
	if err != nil {
		mb.t.Fatalf("%s: shoal %s: %v", mb.node.Name, strings.Join(args, " "), err)
	}
	return out
}

// nodeRows is `node ls` as rows.
func (mb *member) nodeRows() []map[string]string {
	out, err := mb.shoal("node", "ls")
	if err != nil {
		return nil
	}
	return tableRows(out)
}

// TestThreeManagers: a swarm of three managers joined with the manager
// token over mutual TLS; a wrong or rotated token is refused and changes
// nothing; a worker joins and leaves through the CLI; a partitioned
// manager cannot write and catches up on heal; the leader killed with -9
// during a deploy is replaced and the deploy converges; the dead manager
// is Down and Unreachable; a leave that would lose the quorum is refused;
// without quorum reads answer and writes fail. Times are logged, not
// asserted: bench/cluster measures them.
func TestThreeManagers(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildBinaries(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 4})
	var ms []*member
	for _, n := range c.Nodes() {
		ms = append(ms, &member{t: t, node: n, bin: bin})
	}
	for _, mb := range ms {
		t.Cleanup(func() {
			c.Cleanup() // the nodes' processes first: a cgroup with a process cannot go
			removeCgroups(t, "shoal-e2e-"+filepath.Base(mb.node.NetnsPath))
		})
	}
	// The fourth node only tries to join with bad tokens.
	outsider := ms[3]
	ms = ms[:3]
	ms[0].start("--init")
	testcluster.Poll(t, "first manager up", 20*time.Second, func() bool { _, err := ms[0].shoal("node", "ls"); return err == nil })
	token := strings.TrimSpace(ms[0].must("swarm", "join-token", "-q", "manager"))
	if !strings.HasPrefix(token, "SHL-1-") {
		t.Fatalf("manager token %q", token)
	}

	// A wrong secret with the right CA digest, and a token of another
	// swarm: refused, with the reason, and no node is added.
	parts := strings.Split(token, "-")
	wrong := strings.Join(append(parts[:3:3], strings.Repeat("0", len(parts[3]))), "-")
	tryJoin := func(token string) (string, error) {
		defer os.RemoveAll(outsider.node.DataDir)
		return outsider.node.Run(filepath.Join(bin, "shoal-manager"), "--data-dir", outsider.node.DataDir, "--run-dir", outsider.node.RunDir,
			"--listen-addr", outsider.addr(), "--advertise-addr", outsider.addr(), "--join", ms[0].addr(), "--token", token)
	}
	out, err := tryJoin(wrong)
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("join with a wrong secret: %v %s", err, out)
	}
	otherCA := strings.Join([]string{parts[0], parts[1], strings.Repeat("1", len(parts[2])), parts[3]}, "-")
	_, err = tryJoin(otherCA)
	if err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("join with another swarm's CA digest: %v", err)
	}
	// A rotated token stops working at once.
	old := token
	token = strings.TrimSpace(ms[0].must("swarm", "join-token", "-q", "--rotate", "manager"))
	if token == old {
		t.Fatal("join-token --rotate printed the old token")
	}
	if _, err := tryJoin(old); err == nil || !strings.Contains(err.Error(), "rotated") {
		t.Errorf("join with a rotated token: %v", err)
	}
	if rows := ms[0].nodeRows(); len(rows) != 1 {
		t.Errorf("refused joins changed the node list: %v", rows)
	}

	start := time.Now()
	// The third joins through the second, a follower: its Join and
	// AddManager calls are forwarded to the leader.
	ms[1].start("--join", ms[0].addr(), "--token", token)
	testcluster.Poll(t, "second manager up", 30*time.Second, func() bool {
		out, err := ms[1].shoal("node", "ls")
		return err == nil && strings.Contains(out, "Leader")
	})
	ms[2].start("--join", ms[1].addr(), "--token", token)
	testcluster.Poll(t, "3 managers Ready", 30*time.Second, func() bool {
		rows := ms[0].nodeRows()
		leaders, reach := 0, 0
		for _, r := range rows {
			if r["STATUS"] == "Ready" {
				switch r["MANAGER STATUS"] {
				case "Leader":
					leaders++
				case "Reachable":
					reach++
				}
			}
		}
		return len(rows) == 3 && leaders == 1 && reach == 2
	})
	t.Logf("two managers joined and Ready in %v", time.Since(start).Round(time.Millisecond))

	// As a user would: `swarm join` with the worker token through a
	// follower, then `swarm leave`.
	wtoken := strings.TrimSpace(ms[0].must("swarm", "join-token", "-q", "worker"))
	out, err = outsider.node.Run(filepath.Join(bin, "shoal"), "swarm", "join", "--token", wtoken,
		"--data-dir", outsider.node.DataDir, "--run-dir", outsider.node.RunDir,
		"--listen-addr", outsider.addr(), "--advertise-addr", outsider.addr(), ms[1].addr())
	if err != nil || !strings.Contains(out, "This node joined a swarm as a worker.") {
		t.Fatalf("swarm join as a worker: %v\n%s", err, out)
	}
	if rows := ms[2].nodeRows(); len(rows) != 4 {
		t.Errorf("after a worker joined, node ls on another manager has %d rows", len(rows))
	}
	if out, err := outsider.shoal("swarm", "leave"); err != nil || !strings.Contains(out, "Node left the swarm.") {
		t.Errorf("swarm leave on the worker: %v\n%s", err, out)
	}
	testcluster.Poll(t, "the worker's daemon gone", 20*time.Second, func() bool { return len(outsider.node.Processes()) == 0 })
	if left := outsider.node.Leftovers(); len(left) > 0 {
		t.Errorf("the worker left behind: %v", left)
	}
	os.RemoveAll(outsider.node.DataDir)

	// A fourth manager joins and leaves again: out of Raft, without
	// --force since the other three keep the quorum; then demote and rm
	// take it out of the node list.
	out, err = outsider.node.Run(filepath.Join(bin, "shoal"), "swarm", "join", "--token", token,
		"--data-dir", outsider.node.DataDir, "--run-dir", outsider.node.RunDir,
		"--listen-addr", outsider.addr(), "--advertise-addr", outsider.addr(), ms[0].addr())
	if err != nil || !strings.Contains(out, "This node joined a swarm as a manager.") {
		t.Fatalf("swarm join as a manager: %v\n%s", err, out)
	}
	fourthID := nodeIDOf(t, ms[0], outsider)
	if out, err := outsider.shoal("swarm", "leave"); err != nil || !strings.Contains(out, "Node left the swarm.") {
		t.Errorf("swarm leave of a fourth manager: %v\n%s", err, out)
	}
	testcluster.Poll(t, "the fourth manager's daemon gone", 20*time.Second, func() bool { return len(outsider.node.Processes()) == 0 })
	ms[0].must("node", "demote", fourthID)
	testcluster.Poll(t, "the left manager removable", 20*time.Second, func() bool {
		_, err := ms[0].shoal("node", "rm", "--force", fourthID)
		return err == nil
	})
	if rows := ms[0].nodeRows(); len(rows) != 4 { // 3 managers and the worker that left
		t.Errorf("node ls after the fourth manager left and was removed: %v", rows)
	}
	os.RemoveAll(outsider.node.DataDir)

	// Writes through a follower reach everyone.
	compose := filepath.Join(t.TempDir(), "s.yml")
	write := func(replicas int) {
		os.WriteFile(compose, []byte(fmt.Sprintf("services:\n  web:\n    image: shoal-e2e/none:latest\n    deploy:\n      replicas: %d\n", replicas)), 0o644)
	}
	leader := func(from *member) *member {
		for _, r := range from.nodeRows() {
			if r["MANAGER STATUS"] == "Leader" {
				for _, mb := range ms {
					if strings.Contains(r["ID"], "*") && mb == from {
						return mb
					}
				}
				// Match by address through node inspect.
				id := strings.TrimSuffix(strings.Fields(r["ID"])[0], "*")
				out, _ := from.shoal("node", "inspect", "--format", "{{.Status.Addr}}", id)
				for _, mb := range ms {
					if strings.TrimSpace(out) == mb.addr() {
						return mb
					}
				}
			}
		}
		return nil
	}
	var lead *member
	for _, mb := range ms {
		if l := leader(mb); l != nil {
			lead = l
			break
		}
	}
	if lead == nil {
		t.Fatal("no leader in node ls")
	}
	var follower *member
	for _, mb := range ms {
		if mb != lead {
			follower = mb
			break
		}
	}
	write(0)
	follower.must("stack", "deploy", "-c", compose, "probe")
	for _, mb := range ms {
		testcluster.Poll(t, mb.node.Name+" sees the stack", 10*time.Second, func() bool {
			out, _ := mb.shoal("stack", "ls")
			return strings.Contains(out, "probe")
		})
	}

	// Partition a follower away: it cannot write, the majority can; on
	// heal it catches up.
	var cut *member
	for _, mb := range ms {
		if mb != lead && mb != follower {
			cut = mb
		}
	}
	cut.node.Partition()
	write(1)
	follower.must("stack", "deploy", "-c", compose, "probe2")
	start = time.Now()
	if _, err := cut.shoal("stack", "deploy", "-c", compose, "probe3"); err == nil {
		t.Error("a write on the partitioned manager succeeded")
	} else {
		t.Logf("write on the partitioned manager failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	cut.node.Heal()
	healed := time.Now()
	// hashicorp/raft backs off replication to an unreachable follower up
	// to 40 s (10 ms doubled per failure), so catching up may take a
	// while after a partition; the time is logged.
	testcluster.Poll(t, "healed manager catches up", 90*time.Second, func() bool {
		out, _ := cut.shoal("stack", "ls")
		return strings.Contains(out, "probe2") && !strings.Contains(out, "probe3")
	})
	t.Logf("the healed manager caught up %v after the heal", time.Since(healed).Round(time.Millisecond))

	// Kill the leader during a deploy of real tasks: a new one within
	// 3 s, writes go on, and the deploy converges on the survivors.
	for _, mb := range ms {
		mb.importImage("shoal-e2e/web:latest")
	}
	live := filepath.Join(t.TempDir(), "live.yml")
	os.WriteFile(live, []byte("services:\n  web:\n    image: shoal-e2e/web:latest\n    deploy:\n      replicas: 6\n"), 0o644)
	follower.must("stack", "deploy", "-c", live, "live")
	lead.proc.Kill()
	killed := time.Now()
	var rest []*member
	for _, mb := range ms {
		if mb != lead {
			rest = append(rest, mb)
		}
	}
	var newLeader *member
	testcluster.Poll(t, "a new leader", 10*time.Second, func() bool {
		for _, mb := range rest {
			if l := leader(mb); l != nil && l != lead {
				newLeader = l
				return true
			}
		}
		return false
	})
	failover := time.Since(killed)
	t.Logf("new leader %s after %v", newLeader.node.Name, failover.Round(time.Millisecond))
	// The time is logged, not asserted: bench/cluster measures it.
	write(2)
	for _, mb := range rest {
		if _, err := mb.shoal("stack", "deploy", "-c", compose, "probe"); err != nil {
			t.Errorf("write through %s after failover: %v", mb.node.Name, err)
		}
	}
	// The dead manager is Down and Unreachable.
	testcluster.Poll(t, "dead manager Down", 15*time.Second, func() bool {
		for _, r := range rest[0].nodeRows() {
			if r["STATUS"] == "Down" && r["MANAGER STATUS"] == "Unreachable" {
				return true
			}
		}
		return false
	})
	t.Logf("dead manager Down %v after the kill", time.Since(killed).Round(time.Millisecond))
	testcluster.Poll(t, "the deploy begun before the kill converges on the survivors", 30*time.Second, func() bool {
		n := 0
		for _, mb := range rest {
			for _, r := range mb.running() {
				if r.Spec.Labels["com.docker.swarm.service.name"] == "live_web" {
					n++
				}
			}
		}
		return n == 6
	})
	t.Logf("6 tasks running on the survivors %v after the kill", time.Since(killed).Round(time.Millisecond))

	// Leaving now would lose the quorum: refused without --force.
	if _, err := rest[0].shoal("swarm", "leave"); err == nil || !strings.Contains(err.Error(), "Without a Raft quorum") {
		t.Errorf("leave that loses the quorum: %v", err)
	}

	// Without quorum, reads answer and writes fail with the reason.
	rest[1].proc.Kill()
	time.Sleep(time.Second)
	if _, err := rest[0].shoal("stack", "ls"); err != nil {
		t.Errorf("read without quorum: %v", err)
	}
	start = time.Now()
	write(3)
	_, err = rest[0].shoal("stack", "deploy", "-c", compose, "probe")
	if err == nil || !strings.Contains(err.Error(), "does not have a leader") {
		t.Errorf("write without quorum: %v", err)
	}
	t.Logf("write without quorum failed after %v", time.Since(start).Round(time.Millisecond))
}

// tableRows parses a CLI table whose columns are separated by two or more
// spaces in the header, by the columns' start positions.
func tableRows(out string) []map[string]string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 1 {
		return nil
	}
	header := lines[0]
	var names []string
	var starts []int
	for i := 0; i < len(header); {
		for i < len(header) && header[i] == ' ' {
			i++
		}
		if i >= len(header) {
			break
		}
		j := strings.Index(header[i:], "  ")
		if j < 0 {
			j = len(header) - i
		}
		names = append(names, header[i:i+j])
		starts = append(starts, i)
		i += j
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		r := map[string]string{}
		for k, name := range names {
			if starts[k] >= len(l) {
				continue
			}
			end := len(l)
			if k+1 < len(starts) && starts[k+1] < len(l) {
				end = starts[k+1]
			}
			r[name] = strings.TrimSpace(l[starts[k]:end])
		}
		rows = append(rows, r)
	}
	return rows
}

// running lists the running containers of this member's node.
func (mb *member) running() []record {
	n := &node{dataDir: mb.node.DataDir}
	return n.running()
}

// importImage imports the test image into this member's node.
func (mb *member) importImage(ref string) {
	mb.t.Helper()
	tar := testutil.HelperRootfs(mb.t, nil)
	mb.must("image", "import", "--change", `CMD ["/bin/helper", "serve", "80"]`, "--change", "ENV PATH=/bin", tar, ref)
}

// nodeID is the id `node inspect self` reports on a manager for member
// target, matched by address.
func nodeIDOf(t *testing.T, mgr, target *member) string {
	t.Helper()
	for _, r := range mgr.nodeRows() {
		id := strings.TrimSpace(strings.TrimSuffix(r["ID"], "*"))
		out, _ := mgr.shoal("node", "inspect", "--format", "{{.Status.Addr}}", id)
		if strings.TrimSpace(out) == target.addr() {
			return id
		}
	}
	t.Fatalf("no node with address %s", target.addr())
	return ""
}

// TestWorkers: one manager and two workers joined with the worker token;
// the image is pulled from the manager; tasks spread over all three and
// reach each other over the overlay, by VIP and through every node's
// published port; a killed worker is Down and its tasks run elsewhere;
// when it comes back its stale containers are stopped, not duplicated;
// drain moves tasks off a node without a failed request; promote and
// demote; certificates renew; node rm refuses the node; stack rm and
// swarm leave leave nothing behind.
func TestWorkers(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildBinaries(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	var ms []*member
	for _, n := range c.Nodes() {
		ms = append(ms, &member{t: t, node: n, bin: bin})
	}
	for _, mb := range ms {
		t.Cleanup(func() {
			c.Cleanup() // the nodes' processes first: a cgroup with a process cannot go
			removeCgroups(t, "shoal-e2e-"+filepath.Base(mb.node.NetnsPath))
		})
	}
	mgr, w1, w2 := ms[0], ms[1], ms[2]
	// Short-lived certificates, so that every node renews its own during
	// the test (at half-time, 6 s).
	mgr.start("--init", "--cert-expiry", "12s")
	testcluster.Poll(t, "manager up", 20*time.Second, func() bool { _, err := mgr.shoal("node", "ls"); return err == nil })
	token := strings.TrimSpace(mgr.must("swarm", "join-token", "-q", "worker"))
	for _, w := range []*member{w1, w2} {
		w.start("--join", mgr.addr(), "--token", token)
	}
	testcluster.Poll(t, "3 nodes Ready", 30*time.Second, func() bool {
		ready := 0
		for _, r := range mgr.nodeRows() {
			if r["STATUS"] == "Ready" {
				ready++
			}
		}
		return ready == 3
	})
	// Cluster commands are for managers.
	testcluster.Poll(t, "worker socket up", 10*time.Second, func() bool {
		_, err := w1.shoal("info")
		return err == nil || !strings.Contains(err.Error(), "connect")
	})
	if _, err := w1.shoal("node", "ls"); err == nil || !strings.Contains(err.Error(), "This node is not a swarm manager") {
		t.Errorf("node ls on a worker: %v", err)
	}
	// The image is loaded on the manager only: workers pull it from the
	// manager's registry when a task needs it.
	mgr.importImage("shoal-e2e/web:latest")
	firstCert := nodeCert(t, w1)

	// The seed's stack, with the test image, and a client beside it on
	// its network, pinned to the manager.
	seed, err := os.ReadFile("../../shared/compose/getstartedlab.yml")
	if err != nil {
		t.Fatalf("the seed stack: %v", err)
	}
	compose := filepath.Join(t.TempDir(), "docker-compose.yml")
	os.WriteFile(compose, bytes.Replace(seed, []byte("zoeminghong/docker-demp:v1.0.0"), []byte("shoal-e2e/web:latest"), 1), 0o644)
	clientFile := filepath.Join(t.TempDir(), "client.yml")
	os.WriteFile(clientFile, []byte(`services:
  client:
    image: shoal-e2e/web:latest
    command: ["/bin/helper", "sleep", "inf"]
    deploy:
      placement:
        constraints: [node.role == manager]
    networks: [webnet]
networks:
  webnet:
`), 0o644)
	mgr.must("stack", "deploy", "-c", compose, "-c", clientFile, "w")
	counts := func() []int {
		out := make([]int, len(ms))
		for i, mb := range ms {
			for _, r := range mb.running() {
				if r.Spec.Labels["com.docker.swarm.service.name"] == "w_web" {
					out[i]++
				}
			}
		}
		return out
	}
	testcluster.Poll(t, "5 tasks running", 60*time.Second, func() bool {
		c := counts()
		return c[0]+c[1]+c[2] == 5
	})
	spread := counts()
	for i, n := range spread {
		if n < 1 || n > 2 {
			t.Errorf("tasks per node %v, want 2/2/1 in some order", spread)
			break
		}
		_ = i
	}
	t.Logf("tasks per node: %v", spread)

	// Across nodes over the overlay: the client on the manager resolves
	// every task and reaches each one, by address.
	var client string
	testcluster.Poll(t, "client running", 30*time.Second, func() bool {
		for _, r := range mgr.running() {
			if r.Spec.Labels["com.docker.swarm.service.name"] == "w_client" {
				client = r.Name
				return true
			}
		}
		return false
	})
	var addrs []string
	testcluster.Poll(t, "tasks.web resolves to 5 addresses", 20*time.Second, func() bool {
		out, err := mgr.shoal("container", "exec", client, "/bin/helper", "lookup", "tasks.web")
		addrs = strings.Fields(out)
		return err == nil && len(addrs) == 5
	})
	hosts := map[string]bool{}
	for _, a := range addrs {
		out, err := mgr.shoal("container", "exec", client, "/bin/helper", "fetch", "http://"+a+"/", "1")
		if err != nil {
			t.Errorf("task at %s from the manager's client: %v", a, err)
			continue
		}
		hosts[out] = true
	}
	if len(hosts) != 5 {
		t.Errorf("the client reached %d distinct tasks of 5 across nodes", len(hosts))
	}
	// The service's VIP spreads over the tasks of every node.
	out, err := mgr.shoal("container", "exec", client, "/bin/helper", "fetch", "http://web/", "20")
	if seen := hostnames(out); err != nil || len(seen) < 4 {
		t.Errorf("20 requests to the VIP from the manager's client reached %d tasks (%v): %v", len(seen), seen, err)
	}
	// The published port answers on every node and spreads over the tasks
	// of all nodes (the routing mesh).
	meshSeen := func(mb *member) map[string]int {
		seen := map[string]int{}
		for range 20 {
			body, err := httpGet("http://" + mb.node.Addr.String() + ":4000/")
			if err != nil {
				t.Errorf("port 4000 on %s: %v", mb.node.Name, err)
				return seen
			}
			for h, c := range hostnames(body) {
				seen[h] += c
			}
		}
		return seen
	}
	for _, mb := range ms {
		if seen := meshSeen(mb); len(seen) < 4 {
			t.Errorf("20 requests to port 4000 on %s reached %d tasks (%v), want at least 4 of 5", mb.node.Name, len(seen), seen)
		}
	}

	// Kill a worker's daemon (its containers live on, as after a crash of
	// the daemon alone; to the swarm the node is gone).
	w2id := nodeIDOf(t, mgr, w2)
	w2.proc.Kill()
	killed := time.Now()
	testcluster.Poll(t, "killed worker Down", 10*time.Second, func() bool {
		out, _ := mgr.shoal("node", "inspect", "--format", "{{.Status.State}}", w2id)
		return strings.Contains(strings.ToLower(out), "down")
	})
	down := time.Since(killed)
	testcluster.Poll(t, "5 tasks on the other nodes", 20*time.Second, func() bool {
		c := counts()
		return c[0]+c[1] == 5
	})
	replaced := time.Since(killed)
	t.Logf("worker Down after %v, its tasks running elsewhere after %v", down.Round(time.Millisecond), replaced.Round(time.Millisecond))
	// Times are logged, not asserted: bench/cluster measures them.

	// It comes back: its stale containers stop; the service keeps 5.
	w2.start()
	testcluster.Poll(t, "stale containers stopped", 30*time.Second, func() bool { return len(w2.running()) == 0 })
	if c := counts(); c[0]+c[1]+c[2] != 5 {
		t.Errorf("after the worker came back: %v running, want 5 in all", c)
	}

	// Drain the first worker: its tasks move.
	w1id := nodeIDOf(t, mgr, w1)
	// Requests through the manager's port all along: draining a node
	// must not leave a gap in service.
	var fails, oks atomic.Int64
	var firstErr atomic.Value
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for {
			select {
			case <-stopLoad:
				return
			default:
			}
			if _, err := httpGet("http://" + mgr.node.Addr.String() + ":4000/"); err != nil {
				fails.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				oks.Add(1)
			}
		}
	}()
	mgr.must("node", "update", "--availability", "drain", w1id)
	testcluster.Poll(t, "drained node empty, 5 running elsewhere", 30*time.Second, func() bool {
		c := counts()
		return c[1] == 0 && c[0]+c[2] == 5
	})
	time.Sleep(500 * time.Millisecond)
	close(stopLoad)
	<-loadDone
	t.Logf("drain under load: %d requests, %d failed", oks.Load()+fails.Load(), fails.Load())
	if fails.Load() != 0 {
		t.Errorf("%d requests failed while a node was drained; first: %v", fails.Load(), firstErr.Load())
	}
	// A node with no task of the service still answers on its port.
	testcluster.Poll(t, "the drained node's port reaches the other nodes' tasks", 10*time.Second, func() bool {
		body, err := httpGet("http://" + w1.node.Addr.String() + ":4000/")
		return err == nil && strings.Contains(body, "hostname=")
	})

	// Promote the drained worker: it restarts into Raft as a manager;
	// demote it again: it leaves Raft and works on as a worker.
	statusOf := func(id string) (string, string) {
		for _, r := range mgr.nodeRows() {
			if strings.TrimSpace(strings.TrimSuffix(r["ID"], "*")) == id {
				return r["STATUS"], r["MANAGER STATUS"]
			}
		}
		return "", ""
	}
	mgr.must("node", "promote", w1id)
	testcluster.Poll(t, "promoted worker runs as a manager", 60*time.Second, func() bool {
		st, ms := statusOf(w1id)
		out, err := w1.shoal("node", "ls")
		return st == "Ready" && ms == "Reachable" && err == nil && strings.Contains(out, "Leader")
	})
	mgr.must("node", "demote", w1id)
	testcluster.Poll(t, "demoted manager runs as a worker", 60*time.Second, func() bool {
		st, ms := statusOf(w1id)
		_, err := w1.shoal("node", "ls")
		return st == "Ready" && ms == "" && err != nil && strings.Contains(err.Error(), "not a swarm manager")
	})
	if _, err := mgr.shoal("node", "demote", nodeIDOf(t, mgr, mgr)); err == nil || !strings.Contains(err.Error(), "last manager") {
		t.Errorf("demoting the last manager: %v", err)
	}

	// Certificates were renewed on the way, and the nodes stayed in.
	if c := nodeCert(t, w1); c.SerialNumber.Cmp(firstCert.SerialNumber) == 0 || time.Now().After(c.NotAfter) {
		t.Errorf("worker certificate not renewed: serial %x (first %x), expires %v", c.SerialNumber, firstCert.SerialNumber, c.NotAfter)
	}

	mgr.must("stack", "rm", "w")
	testcluster.Poll(t, "nothing running", 30*time.Second, func() bool {
		c := counts()
		return c[0]+c[1]+c[2] == 0
	})
	// node rm: the node's session ends and its certificate is refused
	// from then on, with the reason in its log.
	mgr.must("node", "rm", "--force", w2id)
	testcluster.Poll(t, "removed node refused", 20*time.Second, func() bool {
		return strings.Contains(w2.proc.Output(), "removed from the swarm")
	})
	if rows := mgr.nodeRows(); len(rows) != 2 {
		t.Errorf("node ls after node rm: %v", rows)
	}
	for _, w := range []*member{w1, w2} {
		w.must("swarm", "leave")
		select {
		case <-w.proc.Done():
		case <-time.After(30 * time.Second):
			t.Errorf("%s: daemon still running 30 s after swarm leave", w.node.Name)
		}
	}
	mgr.must("swarm", "leave", "--force")
	select {
	case <-mgr.proc.Done():
	case <-time.After(30 * time.Second):
		t.Error("manager still running 30 s after swarm leave")
	}
	for _, mb := range ms {
		if left := mb.node.Leftovers(); len(left) > 0 {
			t.Errorf("%s left behind: %v", mb.node.Name, left)
		}
		if _, err := os.Stat(filepath.Join(mb.node.DataDir, "node.json")); err == nil {
			t.Errorf("%s: data dir still has node.json after leave", mb.node.Name)
		}
	}
}

// nodeCert reads the node certificate a member keeps in its data dir.
func nodeCert(t *testing.T, mb *member) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(mb.node.DataDir, "certificates", "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("node.pem: no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// removeCgroups removes, in every hierarchy, the cgroup parent a node's
// daemon used: a daemon killed with -9 never removes its own.
func removeCgroups(t *testing.T, name string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var errs []error
		for _, p := range testutil.CgroupDirsContaining(name) {
			if err := testutil.RemoveCgroupTree(p); err != nil {
				errs = append(errs, fmt.Errorf("cgroup %s: %w", p, err))
			}
		}
		if len(errs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Error(errors.Join(errs...))
			return
		}
		// Processes killed a moment ago may still be leaving.
		time.Sleep(100 * time.Millisecond)
	}
}
