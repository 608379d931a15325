package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
// token over mutual TLS; a wrong token is refused and changes nothing; the
// leader killed with -9 is replaced within 3 s and writes go on through
// any manager; the dead manager is seen as Down and Unreachable.
func TestThreeManagers(t *testing.T) {
	testutil.RequiresRoot(t)
	bin := buildBinaries(t)
	c := testcluster.New(t, testcluster.Options{Nodes: 3})
	var ms []*member
	for _, n := range c.Nodes() {
		ms = append(ms, &member{t: t, node: n, bin: bin})
	}
	for _, mb := range ms {
		t.Cleanup(func() { os.RemoveAll("/sys/fs/cgroup/memory/shoal-e2e-" + filepath.Base(mb.node.NetnsPath)) })
	}
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
	out, err := ms[1].node.Run(filepath.Join(bin, "shoal-manager"), "--data-dir", ms[1].node.DataDir, "--run-dir", ms[1].node.RunDir,
		"--listen-addr", ms[1].addr(), "--advertise-addr", ms[1].addr(), "--join", ms[0].addr(), "--token", wrong)
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("join with a wrong secret: %v %s", err, out)
	}
	otherCA := strings.Join([]string{parts[0], parts[1], strings.Repeat("1", len(parts[2])), parts[3]}, "-")
	_, err = ms[1].node.Run(filepath.Join(bin, "shoal-manager"), "--data-dir", ms[1].node.DataDir, "--run-dir", ms[1].node.RunDir,
		"--listen-addr", ms[1].addr(), "--advertise-addr", ms[1].addr(), "--join", ms[0].addr(), "--token", otherCA)
	if err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("join with another swarm's CA digest: %v", err)
	}
	if rows := ms[0].nodeRows(); len(rows) != 1 {
		t.Errorf("refused joins changed the node list: %v", rows)
	}
	os.RemoveAll(ms[1].node.DataDir)

	start := time.Now()
	for _, mb := range ms[1:] {
		mb.start("--join", ms[0].addr(), "--token", token)
	}
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

	// Kill the leader: a new one within 3 s, and writes go on.
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
	if failover > 3*time.Second {
		t.Errorf("failover took %v, want under 3 s", failover)
	}
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
