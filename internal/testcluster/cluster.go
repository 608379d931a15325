// Package testcluster runs several hosts on this one machine for
// multi-node end-to-end tests: each node is a network namespace with one
// interface, eth0, on a private bridge of the host, whose address (.1 of
// the subnet) is the nodes' gateway. The package knows nothing of
// shoal's command lines: a test starts what it wants on each node, and
// the harness captures the output, injects faults (kill -9, a cut link)
// and at the end removes everything, reporting what the nodes' programs
// should have removed themselves.
//
// Programs run in a node's namespace through nsenter(1) --net=PATH, not
// `ip netns exec`, which remounts /sys and so hides the cgroup v1
// hierarchies. Only the network namespace is the node's: nodes share the
// test's file system, mount, PID, UTS and cgroup namespaces, so every
// node program needs the node's own --data-dir and --run-dir (Node has
// them) and a node's mounts and processes are visible to the test.
//
// A cluster needs root; New skips the test without it.
package testcluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
)

// Options shape a cluster. The zero value is one node on a free subnet.
type Options struct {
	// Nodes is the number of nodes, 1 to MaxNodes; 0 means 1.
	Nodes int
	// Subnet is the nodes' IPv4 network: the bridge has .1, node i
	// (1-based) has .10+i. By default a /24 in 10.200.0.0-10.249.255.0
	// that no address or route of the host overlaps; test processes
	// choose under a lock, so parallel ones get different subnets.
	Subnet netip.Prefix
	// Prefix names what the cluster makes on the host: the bridge
	// "<prefix>-br", node i's namespace /run/netns/<prefix>-n<i> and
	// the host end of its veth, also "<prefix>-n<i>". A lower case
	// letter, then lower case letters and digits, at most 11 characters
	// in all (link names have 15). By default "stc<pid>", or, while that
	// is taken by another cluster of the test process, "stc<pid>a",
	// "stc<pid>b"…
	Prefix string
	// StopTimeout is how long Cleanup waits for the processes that
	// Start started to exit on SIGTERM before it kills them; 5s when 0.
	StopTimeout time.Duration
}

// MaxNodes is the most nodes a cluster can have.
const MaxNodes = 99

const (
	defaultStopTimeout = 5 * time.Second
	// tailLines is how much of each log a failed test shows.
	tailLines = 60
)

var (
	prefixRE  = regexp.MustCompile(`^[a-z][a-z0-9]{0,10}$`)
	prefixSeq atomic.Int32
)

// Cluster is a set of nodes on one bridge. Its methods may be called
// from several goroutines.
type Cluster struct {
	t       testing.TB
	nsenter string // path of nsenter(1)
	rec     *record
	subnet  netip.Prefix
	gw      netip.Addr
	stop    time.Duration
	nodes   []*Node
	seq     atomic.Int64 // numbers log files

	mu        sync.Mutex
	procs     []*Process
	closing   bool     // Cleanup has begun: Start refuses
	cleaned   bool     // Cleanup is done: leftovers are set
	leftovers []string // found by Cleanup
}

// Node is one host of a cluster.
type Node struct {
	// Name is "n1", "n2"…
	Name string
	// Addr is the node's address on eth0.
	Addr netip.Addr
	// NetnsPath pins the node's network namespace; `ip netns` lists it
	// by its base name.
	NetnsPath string
	// DataDir is an empty directory of the node's own under the test's
	// TempDir, for --data-dir.
	DataDir string
	// RunDir is an empty directory of the node's own with a short path
	// (/run/shoal-testcluster/<prefix>/n<i>), for --run-dir and unix
	// sockets, whose paths may not exceed 107 bytes.
	RunDir string
	// LogDir holds the output of the node's programs: commands.log for
	// Command and Run, one file per Start. They outlive Cleanup, until
	// the test's TempDir goes.
	LogDir string

	c    *Cluster
	rec  nodeRecord
	link string   // host end of the veth, a bridge port
	log  *os.File // LogDir/commands.log
}

// New makes a cluster and registers its Cleanup with t. It fails the
// test if the cluster cannot be made, and skips it without root.
func New(t testing.TB, opt Options) *Cluster {
	t.Helper()
	testutil.RequiresRoot(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Fatalf("testcluster: nodes run programs through nsenter (util-linux): %v", err)
	}
	if opt.Nodes == 0 {
		opt.Nodes = 1
	}
	if opt.Nodes < 0 || opt.Nodes > MaxNodes {
		t.Fatalf("testcluster: %d nodes; want 1 to %d", opt.Nodes, MaxNodes)
	}
	if opt.StopTimeout == 0 {
		opt.StopTimeout = defaultStopTimeout
	}
	if opt.Prefix != "" && !prefixRE.MatchString(opt.Prefix) {
		t.Fatalf("testcluster: prefix %q: want a lower case letter, then at most 10 letters or digits", opt.Prefix)
	}
	tmp := t.TempDir()
	c := &Cluster{t: t, nsenter: nsenter, stop: opt.StopTimeout}
	c.claim(opt, tmp)
	for _, n := range c.nodes {
		if err := n.create(); err != nil {
			t.Fatalf("testcluster: node %s: %v", n.Name, err)
		}
	}
	return c
}

// defaultPrefix returns the first free one of "stc<pid>", then
// "stc<pid>a"… "stc<pid>z", "stc<pid>aa"… "stc<pid>zz" as long as they
// fit in 11 characters, going round from where the last call stopped. The caller
// holds the host lock, so no other process takes the same; since the
// pid is in it, none would try.
func defaultPrefix() (string, error) {
	base := "stc" + strconv.Itoa(os.Getpid())
	var names []string
	for n := 0; ; n++ {
		var suffix []byte
		for k := n; k > 0; k = (k - 1) / 26 {
			suffix = append([]byte{byte('a' + (k-1)%26)}, suffix...)
		}
		name := base + string(suffix)
		if len(name) > 11 || len(suffix) > 2 {
			break
		}
		names = append(names, name)
	}
	start := int(prefixSeq.Add(1) - 1)
	for i := range names {
		if name := names[(start+i)%len(names)]; prefixInUse(name) == "" {
			return name, nil
		}
	}
	return "", fmt.Errorf("all %d prefixes %s… are taken: too many clusters at once in this test process", len(names), base)
}

// claim chooses the subnet, records the cluster and makes its bridge,
// all under the host lock, so that the next test process to look sees
// the subnet taken. From the record on, Cleanup is registered.
func (c *Cluster) claim(opt Options, tmp string) {
	t := c.t
	t.Helper()
	unlock, err := lockHost()
	if err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	defer unlock()
	done, err := removeStale()
	for _, d := range done {
		t.Logf("testcluster: %s", d)
	}
	if err != nil {
		t.Logf("testcluster: removing clusters of gone test processes: %v", err)
	}
	if opt.Prefix == "" {
		if opt.Prefix, err = defaultPrefix(); err != nil {
			t.Fatalf("testcluster: %v", err)
		}
	} else if why := prefixInUse(opt.Prefix); why != "" {
		t.Fatalf("testcluster: prefix %s is taken: %s", opt.Prefix, why)
	}
	subnet := opt.Subnet
	if subnet.IsValid() {
		if err := checkSubnet(subnet, opt.Nodes); err != nil {
			t.Fatalf("testcluster: %v", err)
		}
	} else if subnet, err = chooseSubnet(os.Getpid()); err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	c.subnet = subnet
	c.gw = hostAddr(subnet, 1)
	start, _ := startTime(os.Getpid())
	c.rec = &record{Prefix: opt.Prefix, Pid: os.Getpid(), Start: start, Bridge: opt.Prefix + "-br"}
	for i := 1; i <= opt.Nodes; i++ {
		name := "n" + strconv.Itoa(i)
		n := &Node{
			Name:      name,
			Addr:      hostAddr(subnet, 10+i),
			NetnsPath: filepath.Join(netnsDir, opt.Prefix+"-"+name),
			DataDir:   filepath.Join(tmp, name),
			RunDir:    filepath.Join(c.rec.dir(), name),
			LogDir:    filepath.Join(tmp, "logs", name),
			c:         c,
			link:      opt.Prefix + "-" + name,
		}
		n.rec = nodeRecord{Name: name, NetnsPath: n.NetnsPath, Link: n.link, DataDir: n.DataDir, RunDir: n.RunDir}
		c.rec.Nodes = append(c.rec.Nodes, n.rec)
		c.nodes = append(c.nodes, n)
	}
	if err := os.MkdirAll(c.rec.dir(), 0o755); err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	if err := c.rec.write(); err != nil {
		os.RemoveAll(c.rec.dir())
		t.Fatalf("testcluster: record cluster: %v", err)
	}
	t.Cleanup(c.finish)
	if err := ensureNetnsDir(); err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	if err := createBridge(c.rec.Bridge, c.gw, subnet); err != nil {
		t.Fatalf("testcluster: %v", err)
	}
}

// checkSubnet checks a subnet that the test chose.
func checkSubnet(p netip.Prefix, nodes int) error {
	if !p.Addr().Is4() || p != p.Masked() {
		return fmt.Errorf("subnet %s: want an IPv4 network address with its prefix length", p)
	}
	if hosts := 1 << (32 - p.Bits()); 10+nodes >= hosts-1 {
		return fmt.Errorf("subnet %s has no room for .%d", p, 10+nodes)
	}
	used, err := usedPrefixes()
	if err != nil {
		return err
	}
	for _, u := range used {
		if p.Overlaps(u) {
			return fmt.Errorf("subnet %s overlaps %s, which the host uses", p, u)
		}
	}
	return nil
}

// hostAddr is the i-th address of p.
func hostAddr(p netip.Prefix, i int) netip.Addr {
	b := p.Masked().Addr().As4()
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32(b[:])+uint32(i))
	return netip.AddrFrom4(b)
}

// create makes the node's dirs, namespace and link.
func (n *Node) create() error {
	for _, d := range []string{n.DataDir, n.RunDir, n.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(n.LogDir, "commands.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.log = f
	if err := createNetns(n.NetnsPath); err != nil {
		return err
	}
	return attachNode(n.NetnsPath, n.link, n.c.rec.Bridge, n.Addr, n.c.gw, n.c.subnet)
}

// Nodes returns the nodes, n1 first.
func (c *Cluster) Nodes() []*Node { return slices.Clone(c.nodes) }

// Subnet returns the nodes' network.
func (c *Cluster) Subnet() netip.Prefix { return c.subnet }

// Gateway returns the host's address on the nodes' network.
func (c *Cluster) Gateway() netip.Addr { return c.gw }

// Prefix returns the prefix of the names the cluster gave its links and
// namespaces.
func (c *Cluster) Prefix() string { return c.rec.Prefix }

// Bridge returns the name of the host's bridge that connects the nodes.
func (c *Cluster) Bridge() string { return c.rec.Bridge }

// Partition cuts the node off the network, both ways, by disabling its
// port of the bridge: its eth0 stays up, and frames from and to it are
// dropped, as by a broken switch; connections time out. The gateway and
// the host are cut off too. Partition of a cut off node does nothing.
//
// If a program on the node sets eth0 down and up again, the bridge
// enables the port again: the cut lasts only while the link does.
func (n *Node) Partition() {
	n.c.t.Helper()
	if err := setPortState(n.link, brStateDisabled); err != nil {
		n.c.t.Fatalf("testcluster: partition %s: %v", n.Name, err)
	}
}

// Heal undoes Partition. Heal of a node that is not cut off does
// nothing.
func (n *Node) Heal() {
	n.c.t.Helper()
	if err := setPortState(n.link, brStateForwarding); err != nil {
		n.c.t.Fatalf("testcluster: heal %s: %v", n.Name, err)
	}
}

// Links lists the names of the links in the node's namespace, sorted:
// "eth0" and "lo", and what the node's programs made.
func (n *Node) Links() ([]string, error) { return linksIn(n.NetnsPath) }

// Processes lists, sorted, the processes that are the node's: those in
// its network namespace or in one that is pinned under its DataDir or
// RunDir (its containers'), those whose arguments name one of these
// dirs, and all their descendants. Zombies are not listed.
func (n *Node) Processes() []int {
	var pids []int
	for _, p := range n.rec.scope().members(scanProcs()) {
		pids = append(pids, p.pid)
	}
	slices.Sort(pids)
	return pids
}

// Mounts lists the mount points at or under the node's DataDir and
// RunDir.
func (n *Node) Mounts() []string {
	ms, _ := mountsUnder(n.rec.dirs())
	var out []string
	for _, m := range ms {
		out = append(out, m.point)
	}
	slices.Sort(out)
	return out
}

// Leftovers lists what the node's programs left that they should have
// removed: processes other than those that Start started and that still
// run, links besides eth0 and lo, mounts under its dirs, nftables
// tables. Each entry starts with the node's name. It is meant for after
// the node's daemons have stopped: the containers of a running daemon
// are listed too. After Cleanup, it returns what Cleanup found (see
// Cluster.Leftovers).
func (n *Node) Leftovers() []string {
	if left, ok := n.c.foundLeftovers(); ok {
		var out []string
		for _, l := range left {
			if strings.HasPrefix(l, n.Name+": ") {
				out = append(out, l)
			}
		}
		return out
	}
	return n.leftovers()
}

func (n *Node) leftovers() []string {
	running := n.c.runningPids()
	var out []string
	add := func(format string, args ...any) {
		out = append(out, n.Name+": "+fmt.Sprintf(format, args...))
	}
	for _, p := range n.rec.scope().members(scanProcs()) {
		if !running[p.pid] {
			add("%s", p)
		}
	}
	// A node whose namespace is gone (removed by a later test process)
	// has no links nor tables left.
	if links, err := n.Links(); err != nil && !errors.Is(err, os.ErrNotExist) {
		add("links unknown: %v", err)
	} else {
		for _, l := range links {
			if l != nodeIf && l != "lo" {
				add("link %s", l)
			}
		}
	}
	ms, err := mountsUnder(n.rec.dirs())
	if err != nil {
		add("mounts unknown: %v", err)
	}
	for _, m := range ms {
		add("mount %s (%s)", m.point, m.fstype)
	}
	if tables, err := nftTablesIn(n.NetnsPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		add("nftables tables unknown: %v", err)
	} else {
		for _, tb := range tables {
			add("nftables table %s", tb)
		}
	}
	return out
}

// Leftovers lists, for all nodes, what Node.Leftovers lists. After
// Cleanup it returns what Cleanup found before it removed everything,
// so that a test can check, after Cleanup, that the nodes' programs
// cleaned up after themselves; Cleanup also logs it.
func (c *Cluster) Leftovers() []string {
	if left, ok := c.foundLeftovers(); ok {
		return left
	}
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.leftovers()...)
	}
	return out
}

func (c *Cluster) foundLeftovers() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.leftovers), c.cleaned
}

// runningPids are the processes that Start started and that still run.
func (c *Cluster) runningPids() map[int]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]bool{}
	for _, p := range c.procs {
		if !p.Exited() {
			out[p.Pid()] = true
		}
	}
	return out
}

// Cleanup stops the processes that Start started (SIGTERM, then SIGKILL
// after Options.StopTimeout), notes what the nodes left (see
// Leftovers) and logs it, then kills every process of the nodes (see
// Node.Processes), unmounts what is mounted under their dirs, and
// removes the links, namespaces and dirs. The cluster's t.Cleanup calls
// it; a test may call it before, to check Leftovers. Cleanup after
// Cleanup does nothing.
func (c *Cluster) Cleanup() {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	procs := slices.Clone(c.procs)
	c.mu.Unlock()

	var left []string
	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(c.stop)
	defer timer.Stop()
	expired := false
	for _, p := range procs {
		if expired {
			break
		}
		select {
		case <-p.done:
		case <-timer.C:
			expired = true
		}
	}
	for _, p := range procs {
		if !p.Exited() {
			left = append(left, fmt.Sprintf("%s: %s still running %v after SIGTERM", p.node.Name, p, c.stop))
			p.Kill()
		}
	}
	for _, n := range c.nodes {
		left = append(left, n.leftovers()...)
	}
	err := teardown(c.rec)

	c.mu.Lock()
	c.cleaned, c.leftovers = true, left
	c.mu.Unlock()
	for _, l := range left {
		c.t.Logf("testcluster: cleaned up after the node: %s", l)
	}
	if err != nil {
		c.t.Errorf("testcluster: cleanup: %v", err)
	}
}

// finish is what t.Cleanup runs: Cleanup, then, if the test failed, the
// end of every log.
func (c *Cluster) finish() {
	c.Cleanup()
	if c.t.Failed() {
		c.dumpLogs()
	}
	for _, n := range c.nodes {
		if n.log != nil {
			n.log.Close()
		}
	}
}

func (c *Cluster) dumpLogs() {
	for _, n := range c.nodes {
		ents, _ := os.ReadDir(n.LogDir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") { // Run's outputs, also in commands.log
				continue
			}
			path := filepath.Join(n.LogDir, e.Name())
			b, err := os.ReadFile(path)
			if err != nil || len(b) == 0 {
				continue
			}
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			what := fmt.Sprintf("all %d lines", len(lines))
			if len(lines) > tailLines {
				lines = lines[len(lines)-tailLines:]
				what = fmt.Sprintf("last %d lines", tailLines)
			}
			c.t.Logf("testcluster: %s %s, %s:\n%s", n.Name, e.Name(), what, strings.Join(lines, "\n"))
		}
	}
}

// Poll calls cond until it returns true, and fails the test with what
// if it does not within d. The interval grows from 5ms to 100ms.
func Poll(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for wait := 5 * time.Millisecond; !cond(); wait = min(2*wait, 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(wait)
	}
}
