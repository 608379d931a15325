package testcluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// echoPort is where test echo servers listen; every node has its own
// port space.
const echoPort = 7000

// startEcho starts an echo server on n and waits until it listens.
func startEcho(t *testing.T, n *Node) *Process {
	t.Helper()
	p := n.Start(self(t), helperArg, "echo", netip.AddrPortFrom(n.Addr, echoPort).String())
	Poll(t, n.Name+"'s echo server listening", 5*time.Second, func() bool {
		return strings.Contains(p.Output(), "listening") || p.Exited()
	})
	if p.Exited() {
		t.Fatalf("echo server on %s exited: %v\n%s", n.Name, p.Err(), p.Output())
	}
	return p
}

// dial has from send a line to to's echo server and returns the error,
// nil if the line came back.
func dial(t *testing.T, from, to *Node, timeout time.Duration) error {
	t.Helper()
	out, err := from.Run(self(t), helperArg, "dial", netip.AddrPortFrom(to.Addr, echoPort).String(), timeout.String())
	if err == nil && out != "ping\n" {
		return fmt.Errorf("echo from %s answered %q", to.Name, out)
	}
	return err
}

// dead reports whether pid has exited. A detached process that was
// killed may stay a zombie a while: init reaps it, and on some machines
// init is slow.
func dead(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && strings.HasPrefix(string(b[i:]), ") Z")
}

// snapshot is what a cluster has on the host, to check that Cleanup
// removed it all.
type snapshot struct {
	prefix string
	netns  map[uint64]bool
	dirs   []string
}

func snap(t *testing.T, c *Cluster) snapshot {
	t.Helper()
	s := snapshot{prefix: c.Prefix(), netns: map[uint64]bool{}, dirs: []string{c.rec.dir()}}
	for _, n := range c.Nodes() {
		ino, err := netnsInode(n.NetnsPath)
		if err != nil {
			t.Fatal(err)
		}
		s.netns[ino] = true
		s.dirs = append(s.dirs, n.DataDir, n.RunDir)
	}
	return s
}

// assertGone checks that nothing of the snapshot's cluster is left.
func assertGone(t *testing.T, s snapshot) {
	t.Helper()
	if ns, _ := filepath.Glob(filepath.Join(netnsDir, s.prefix+"-*")); len(ns) > 0 {
		t.Errorf("namespaces left: %v", ns)
	}
	if links, err := hostLinksWithPrefix(s.prefix); err != nil || len(links) > 0 {
		t.Errorf("host links left: %v (%v)", links, err)
	}
	for _, p := range scanProcs() {
		if p.netns != 0 && s.netns[p.netns] {
			t.Errorf("%s left in a node's namespace", p)
		}
	}
	for _, d := range s.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dir %s left (%v)", d, err)
		}
	}
	if ms, err := mountsUnder(s.dirs); err != nil || len(ms) > 0 {
		t.Errorf("mounts left: %v (%v)", ms, err)
	}
}

func TestCluster(t *testing.T) {
	c := New(t, Options{Nodes: 3})
	nodes := c.Nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes))
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	if !c.Subnet().Contains(c.Gateway()) || c.Gateway() != c.Subnet().Addr().Next() {
		t.Errorf("gateway %s, subnet %s", c.Gateway(), c.Subnet())
	}
	for i, n := range nodes {
		if want := fmt.Sprintf("n%d", i+1); n.Name != want {
			t.Errorf("node %d is named %s, want %s", i, n.Name, want)
		}
		if want := hostAddr(c.Subnet(), 11+i); n.Addr != want {
			t.Errorf("%s has %s, want %s", n.Name, n.Addr, want)
		}
		if links, err := n.Links(); err != nil || !slices.Equal(links, []string{"eth0", "lo"}) {
			t.Errorf("%s's links: %v (%v)", n.Name, links, err)
		}
		if len(n.RunDir) > 60 {
			t.Errorf("%s's run dir %s is too long for unix sockets in it", n.Name, n.RunDir)
		}
		if left := n.Leftovers(); len(left) > 0 {
			t.Errorf("a new node has leftovers: %v", left)
		}
	}
	// The gateway answers, and the default route leads to it.
	if out, err := n3.Run("ip", "route", "show", "default"); err != nil || !strings.Contains(out, "via "+c.Gateway().String()) {
		t.Errorf("n3's default route: %q (%v)", out, err)
	}

	srv1 := startEcho(t, n1)
	startEcho(t, n2)
	if err := dial(t, n2, n1, 2*time.Second); err != nil {
		t.Fatalf("n2 → n1: %v", err)
	}
	if err := dial(t, n1, n2, 2*time.Second); err != nil {
		t.Fatalf("n1 → n2: %v", err)
	}

	n1.Partition()
	n1.Partition() // idempotent
	// Frames are dropped: connections time out, as across a real cut.
	if err := dial(t, n2, n1, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("n2 → n1 across the partition: %v; want a timeout", err)
	}
	if err := dial(t, n1, n2, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("n1 → n2 across the partition: %v; want a timeout", err)
	}
	if err := dial(t, n3, n2, 2*time.Second); err != nil {
		t.Errorf("n3 → n2 during n1's partition: %v", err)
	}
	if links, err := n1.Links(); err != nil || len(links) != 2 {
		t.Errorf("n1's links while cut off: %v (%v)", links, err)
	}
	n1.Heal()
	n1.Heal()
	Poll(t, "n2 to reach n1 after Heal", 5*time.Second, func() bool { return dial(t, n2, n1, 300*time.Millisecond) == nil })
	if err := dial(t, n1, n2, 2*time.Second); err != nil {
		t.Errorf("n1 → n2 after Heal: %v", err)
	}

	srv1.Kill()
	if !srv1.Exited() {
		t.Error("killed echo server still running")
	}
	var ee *exec.ExitError
	if !errors.As(srv1.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("killed echo server ended with %v", srv1.Err())
	}
	if slices.Contains(n1.Processes(), srv1.Pid()) {
		t.Errorf("killed pid %d still listed", srv1.Pid())
	}
	if err := dial(t, n2, n1, 2*time.Second); err == nil {
		t.Error("n1's echo server answers after Kill")
	}

	// A process that escapes the harness's tree: gone only through the
	// namespace.
	out, err := n3.Run(self(t), helperArg, "spawn")
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("spawn printed %q", out)
	}
	if !slices.Contains(n3.Processes(), child) {
		t.Errorf("detached pid %d not among n3's processes %v", child, n3.Processes())
	}
	if slices.Contains(n2.Processes(), child) {
		t.Errorf("n3's detached pid %d among n2's processes", child)
	}
	wantLeft := fmt.Sprintf("n3: process %d (", child)
	if left := c.Leftovers(); !slices.ContainsFunc(left, func(l string) bool { return strings.HasPrefix(l, wantLeft) }) {
		t.Errorf("leftovers %q lack %s…", left, wantLeft)
	}
	if left := n2.Leftovers(); len(left) > 0 {
		t.Errorf("n2, whose echo server still runs, has leftovers %q", left)
	}

	s := snap(t, c)
	c.Cleanup()
	left := c.Leftovers()
	if len(left) != 1 || !strings.HasPrefix(left[0], wantLeft) {
		t.Errorf("Cleanup found leftovers %q, want only %s…", left, wantLeft)
	}
	if l := n3.Leftovers(); !slices.Equal(l, left) {
		t.Errorf("n3.Leftovers() = %q after Cleanup, want %q", l, left)
	}
	if !dead(child) {
		t.Errorf("detached pid %d lives after Cleanup", child)
	}
	assertGone(t, s)
	c.Cleanup() // idempotent
}

// freeSubnet returns a /24 that the host does not use, outside the range
// of New's defaults, as a test would choose one.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	used, err := usedPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 199, byte(os.Getpid() + i), 0}), 24)
		if !overlapsAny(p, used) {
			return p
		}
	}
	t.Fatal("no free /24 in 10.199.0.0/16")
	return netip.Prefix{}
}

func TestTwoClusters(t *testing.T) {
	a := New(t, Options{Nodes: 2})
	b := New(t, Options{Nodes: 2, Prefix: fmt.Sprintf("tcb%d", os.Getpid()), Subnet: freeSubnet(t)})
	if a.Prefix() == b.Prefix() || a.Subnet().Overlaps(b.Subnet()) || a.Bridge() == b.Bridge() {
		t.Fatalf("clusters clash: %s %s, %s %s", a.Prefix(), a.Subnet(), b.Prefix(), b.Subnet())
	}
	if want := b.Subnet().Addr().As4(); b.Nodes()[1].Addr != netip.AddrFrom4([4]byte{want[0], want[1], want[2], 12}) {
		t.Errorf("b's n2 has %s, want %s", b.Nodes()[1].Addr, want)
	}
	if a.Nodes()[0].NetnsPath == b.Nodes()[0].NetnsPath || a.Nodes()[0].RunDir == b.Nodes()[0].RunDir {
		t.Errorf("nodes share a namespace or run dir")
	}
	for _, c := range []*Cluster{a, b} {
		n := c.Nodes()
		startEcho(t, n[0])
		if err := dial(t, n[1], n[0], 2*time.Second); err != nil {
			t.Errorf("%s: n2 → n1: %v", c.Prefix(), err)
		}
	}

	s := snap(t, a)
	a.Cleanup()
	assertGone(t, s)
	if left := a.Leftovers(); len(left) > 0 {
		t.Errorf("a left %q", left)
	}
	nb := b.Nodes()
	if err := dial(t, nb[1], nb[0], 2*time.Second); err != nil {
		t.Errorf("b after a's cleanup: %v", err)
	}
}

func TestStop(t *testing.T) {
	c := New(t, Options{StopTimeout: 200 * time.Millisecond})
	n := c.Nodes()[0]

	p := n.Start(self(t), helperArg, "sleep")
	p.Stop(5 * time.Second)
	var ee *exec.ExitError
	if !p.Exited() || !errors.As(p.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Errorf("stopped process: exited %v, %v", p.Exited(), p.Err())
	}

	stubborn := n.Start(self(t), helperArg, "ignore-term")
	Poll(t, "SIGTERM ignored", 5*time.Second, func() bool { return strings.Contains(stubborn.Output(), "ready") })
	start := time.Now()
	stubborn.Stop(100 * time.Millisecond)
	if d := time.Since(start); d < 100*time.Millisecond || !stubborn.Exited() ||
		!errors.As(stubborn.Err(), &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("process that ignores SIGTERM: stopped after %v, exited %v, %v", d, stubborn.Exited(), stubborn.Err())
	}
	if left := n.Leftovers(); len(left) > 0 {
		t.Errorf("leftovers after stopping everything: %q", left)
	}
	if !strings.Contains(stubborn.Output(), "signal: killed") {
		t.Errorf("log lacks the exit status:\n%s", stubborn.Output())
	}

	// Cleanup stops what still runs, and notes what had to be killed.
	graceful := n.Start(self(t), helperArg, "sleep")
	stubborn = n.Start(self(t), helperArg, "ignore-term")
	Poll(t, "SIGTERM ignored", 5*time.Second, func() bool { return strings.Contains(stubborn.Output(), "ready") })
	c.Cleanup()
	if !graceful.Exited() || !stubborn.Exited() {
		t.Errorf("running after Cleanup: %v, %v", !graceful.Exited(), !stubborn.Exited())
	}
	left := c.Leftovers()
	if len(left) != 1 || !strings.Contains(left[0], "ignore-term") || !strings.Contains(left[0], "after SIGTERM") {
		t.Errorf("leftovers %q, want the one that ignored SIGTERM", left)
	}
}

func TestRun(t *testing.T) {
	c := New(t, Options{})
	n := c.Nodes()[0]
	out, err := n.Run("sh", "-c", "echo out; echo err >&2")
	if err != nil || out != "out\n" {
		t.Errorf("Run = %q, %v; want stdout only", out, err)
	}
	out, err = n.Run("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || out != "to-stdout\n" ||
		!strings.Contains(err.Error(), "to-stderr") || !strings.Contains(err.Error(), "on n1") {
		t.Errorf("failing Run = %q, %v", out, err)
	}
	// Commands run in the node's namespace: it sees the node's eth0.
	out, err = n.Run("ip", "-brief", "addr", "show", "eth0")
	if err != nil || !strings.Contains(out, n.Addr.String()+"/24") {
		t.Errorf("eth0 in the node: %q, %v", out, err)
	}
	// A command that leaves a daemon holding its stdout returns anyway.
	start := time.Now()
	if _, err := n.Run("sh", "-c", "sleep 30 & echo started"); err != nil {
		t.Error(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run waited %v for the daemon it left", d)
	}
	cmd := n.Command("cat", "/proc/self/net/dev")
	cmd.Stdout = nil
	b, err := cmd.Output()
	if err != nil || !strings.Contains(string(b), "eth0") {
		t.Errorf("Command's /proc/self/net/dev: %v\n%s", err, b)
	}
	logged, _ := os.ReadFile(filepath.Join(n.LogDir, "commands.log"))
	if !strings.Contains(string(logged), "$ sh -c \"echo out; echo err >&2\"") || !strings.Contains(string(logged), "to-stderr") {
		t.Errorf("commands.log:\n%s", logged)
	}
}

// TestLeftovers: what node programs leave (links, mounts, nftables,
// processes in a container's namespace pinned under the node's dirs) is
// listed, and removed.
func TestLeftovers(t *testing.T) {
	c := New(t, Options{})
	n := c.Nodes()[0]
	for _, args := range [][]string{
		{"ip", "link", "add", "shl-br-test", "type", "bridge"},
		{"nft", "add", "table", "inet", "shoal"},
		// A "container": a process in a namespace of its own, pinned in
		// the node's run dir, detached from everything.
		{"touch", filepath.Join(n.RunDir, "ctr")},
		{"sh", "-c", "unshare --net=" + filepath.Join(n.RunDir, "ctr") + " setsid sleep 60 >/dev/null 2>&1 </dev/null &"},
	} {
		if _, err := n.Run(args[0], args[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(n.DataDir, "containers", "x", "rootfs")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	nodeNs, err := netnsInode(n.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	// The sleeper is found through its namespace, pinned in the run dir:
	// it is not in the node's, its arguments name no dir of the node and
	// its parent is init.
	var sleeper proc
	Poll(t, "the container's process among the node's", 5*time.Second, func() bool {
		for _, p := range scanProcs() {
			if slices.Equal(p.args, []string{"sleep", "60"}) && slices.Contains(n.Processes(), p.pid) {
				sleeper = p
				return true
			}
		}
		return false
	})
	if sleeper.netns == nodeNs || sleeper.netns == 0 {
		t.Fatalf("the container's process is in namespace %d, the node's is %d", sleeper.netns, nodeNs)
	}
	if mounts := n.Mounts(); !slices.Contains(mounts, mnt) {
		t.Errorf("Mounts() = %v, want %s in it", mounts, mnt)
	}
	s := snap(t, c)
	c.Cleanup()
	left := strings.Join(c.Leftovers(), "\n")
	for _, want := range []string{
		"n1: link shl-br-test",
		"n1: nftables table inet shoal",
		"n1: mount " + mnt + " (tmpfs)",
		"n1: mount " + filepath.Join(n.RunDir, "ctr") + " (nsfs)",
		fmt.Sprintf("n1: process %d (sleep 60)", sleeper.pid),
	} {
		if !strings.Contains(left, want) {
			t.Errorf("leftovers lack %q:\n%s", want, left)
		}
	}
	if !dead(sleeper.pid) {
		t.Errorf("the container's pid %d lives after Cleanup", sleeper.pid)
	}
	assertGone(t, s)
}

// TestStale: a cluster whose test process died without its cleanups is
// removed by the next New on the host.
func TestStale(t *testing.T) {
	c := New(t, Options{Nodes: 2})
	n := c.Nodes()[1]
	out, err := n.Run(self(t), helperArg, "spawn")
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(out))
	// A pid that is surely gone: a child that has been waited for.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	s := snap(t, c)
	c.rec.Pid = gone.Process.Pid
	if err := c.rec.write(); err != nil {
		t.Fatal(err)
	}
	New(t, Options{})
	if !dead(child) {
		t.Errorf("the dead cluster's pid %d lives", child)
	}
	assertGone(t, s)
}
