package dnat

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/testutil"
)

func (l *lab) port(backends ...netip.Addr) Port {
	return Port{Name: "web", Port: l.pub, Proto: "tcp", Target: l.target, Backends: backends}
}

func (l *lab) udpPort(backends ...netip.Addr) Port {
	return Port{Name: "dns", Port: l.pubUDP, Proto: "udp", Target: l.target, Backends: backends}
}

func (l *lab) sync(vips []VIP, ports ...Port) {
	l.t.Helper()
	if err := l.m.Sync(vips, ports); err != nil {
		l.t.Fatalf("Sync: %v", err)
	}
}

// TestPublishedPortSpreads: connections from outside to any address of
// the node on a published port are spread evenly over the tasks, which
// see the client's own address.
func TestPublishedPortSpreads(t *testing.T) {
	l := newLab(t, 3)
	l.sync(nil, l.port(l.backends()...))
	t.Logf("nft list table ip %s:\n%s", l.table, nftList(l.table))

	got := count(t, 30, func() (reply, error) {
		return askTCP(l.clientNs, netip.AddrPortFrom(l.hostOut, l.pub))
	}, l.client.String())
	assertSpread(t, got, 5, "t0", "t1", "t2")

	// Another address of the node, the bridge's, is published too.
	got = count(t, 6, func() (reply, error) {
		return askTCP(l.clientNs, netip.AddrPortFrom(l.gw, l.pub))
	}, l.client.String())
	assertSpread(t, got, 1, "t0", "t1", "t2")
}

// TestPublishedPortFromHost: the host's own connections to its addresses
// are balanced (output hook), those to loopback are not.
func TestPublishedPortFromHost(t *testing.T) {
	l := newLab(t, 3)
	l.sync(nil, l.port(l.backends()...))

	for _, a := range []netip.Addr{l.hostOut, l.gw} {
		got := count(t, 6, func() (reply, error) { return askTCP("", netip.AddrPortFrom(a, l.pub)) }, "")
		assertSpread(t, got, 1, "t0", "t1", "t2")
	}
	r, err := askTCP("", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), l.pub))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("127.0.0.1:%d: answer %+v, error %v; want connection refused (no DNAT to loopback)", l.pub, r, err)
	}
}

// TestPublishedPortFromTask: a task calling the node's published port
// (hairpin) is masqueraded, so that the reply of a task on the same
// bridge, itself included, comes back through the host.
func TestPublishedPortFromTask(t *testing.T) {
	l := newLab(t, 3)
	l.sync(nil, l.port(l.backends()...))
	got := count(t, 15, func() (reply, error) {
		return askTCP(l.tasks[0].ns, netip.AddrPortFrom(l.hostOut, l.pub))
	}, l.gw.String())
	assertSpread(t, got, 3, "t0", "t1", "t2")
}

// TestVIP: connections to a VIP from its network and from the host are
// spread over the tasks, the caller itself included (hairpin), on any
// port; from elsewhere they are not balanced.
func TestVIP(t *testing.T) {
	l := newLab(t, 3)
	l.sync([]VIP{{Name: "web", Addr: l.vip, Source: l.subnet, Backends: l.backends()}})
	t.Logf("nft list table ip %s:\n%s", l.table, nftList(l.table))

	vip := netip.AddrPortFrom(l.vip, l.target)
	got := count(t, 30, func() (reply, error) { return askTCP(l.tasks[0].ns, vip) }, l.gw.String())
	assertSpread(t, got, 5, "t0", "t1", "t2")
	// UDP too: the VIP rule does not look at the protocol.
	got = count(t, 6, func() (reply, error) { return askUDP(l.tasks[1].ns, vip) }, l.gw.String())
	assertSpread(t, got, 1, "t0", "t1", "t2")
	// From the host (output hook).
	got = count(t, 6, func() (reply, error) { return askTCP("", vip) }, l.gw.String())
	assertSpread(t, got, 1, "t0", "t1", "t2")

	// The client is outside the VIP's network: its packet reaches the
	// host's socket layer, where nothing listens.
	if r, err := askTCP(l.clientNs, vip); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("client → VIP: answer %+v, error %v; want connection refused", r, err)
	}
}

// TestSyncReplacesBackends: a backend removed gets no new connection,
// but its established ones live on (conntrack).
func TestSyncReplacesBackends(t *testing.T) {
	l := newLab(t, 3)
	l.sync(nil, l.port(l.backends()...))
	pub := netip.AddrPortFrom(l.hostOut, l.pub)
	first, conn, err := dialTCP(l.clientNs, pub)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var keep []int
	var names []string
	for i, task := range l.tasks {
		if task.name != first.task {
			keep = append(keep, i)
			names = append(names, task.name)
		}
	}
	l.sync(nil, l.port(l.backends(keep...)...))

	got := count(t, 30, func() (reply, error) { return askTCP(l.clientNs, pub) }, l.client.String())
	assertSpread(t, got, 5, names...)

	// The first connection still reaches the removed task.
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(conn, "ping"); err != nil {
		t.Fatalf("write on the connection to removed %s: %v", first.task, err)
	}
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("echo from removed %s: %q, %v", first.task, line, err)
	}
}

// TestSyncIdenticalWritesNothing: a Sync whose input, once sorted,
// equals the last one sends nothing to the kernel. Checked twice: by the
// Manager's count of batches, and from outside by an nftables monitor
// that must see no event of the table before a marker event that follows
// the Sync.
func TestSyncIdenticalWritesNothing(t *testing.T) {
	m, table := newManager(t)
	a := netip.MustParseAddr
	vips := []VIP{{Name: "web", Addr: a("10.99.0.100"), Source: netip.MustParsePrefix("10.99.0.0/24"),
		Backends: []netip.Addr{a("10.99.0.3"), a("10.99.0.2")}}}
	ports := []Port{
		{Name: "web", Port: 80, Proto: "tcp", Target: 8080, Backends: []netip.Addr{a("10.99.0.2"), a("10.99.0.3")}},
		{Name: "dns", Port: 53, Proto: "udp", Target: 53, Backends: []netip.Addr{a("10.99.0.2")}},
	}
	if err := m.Sync(vips, ports); err != nil {
		t.Fatal(err)
	}
	rulesBefore, err := Rules(table)
	if err != nil {
		t.Fatal(err)
	}
	writes := m.writes

	// The same frontends, in another order, with a backend repeated and
	// a frontend without backends (which makes no rule): no change.
	same := func() error {
		return m.Sync(
			[]VIP{{Name: "web", Addr: a("10.99.0.100"), Source: netip.MustParsePrefix("10.99.0.7/24"),
				Backends: []netip.Addr{a("10.99.0.2"), a("10.99.0.3"), a("10.99.0.2")}},
				{Name: "idle", Addr: a("10.99.0.101"), Source: netip.MustParsePrefix("10.99.0.0/24")}},
			[]Port{ports[1], ports[0]})
	}
	assertNoWrite(t, table, same)
	if m.writes != writes {
		t.Errorf("identical Sync sent %d batches", m.writes-writes)
	}
	if rules, err := Rules(table); err != nil || !slices.Equal(rules, rulesBefore) {
		t.Errorf("rules %q (%v), want unchanged %q", rules, err, rulesBefore)
	}

	// A change is written.
	ports[1].Backends = []netip.Addr{a("10.99.0.3")}
	if err := m.Sync(vips, ports); err != nil {
		t.Fatal(err)
	}
	if m.writes != writes+1 {
		t.Errorf("changed Sync sent %d batches, want 1", m.writes-writes)
	}
}

// assertNoWrite fails if fn changes anything of table: it watches the
// kernel's nftables events, runs fn, then adds and deletes a marker table;
// every event of fn comes before the marker's.
func assertNoWrite(t *testing.T, table string, fn func() error) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorObject(nftables.MonitorObjectTables | nftables.MonitorObjectChains | nftables.MonitorObjectRules | nftables.MonitorObjectSets))
	defer mon.Close()
	events, err := c.AddMonitor(mon)
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(); err != nil {
		t.Fatal(err)
	}
	marker := &nftables.Table{Name: table + "-mark", Family: nftables.TableFamilyIPv4}
	c.AddTable(marker)
	c.DelTable(marker)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("monitor closed before the marker")
			}
			if ev.Error != nil {
				t.Fatalf("monitor: %v", ev.Error)
			}
			switch d := ev.Data.(type) {
			case *nftables.Table:
				if d.Name == marker.Name {
					return
				}
				if d.Name == table {
					t.Fatalf("event %d on table %s", ev.Type, table)
				}
			case *nftables.Chain:
				if d.Table != nil && d.Table.Name == table {
					t.Fatalf("event %d on chain %s of %s", ev.Type, d.Name, table)
				}
			case *nftables.Rule:
				if d.Table != nil && d.Table.Name == table {
					t.Fatalf("event %d on a rule of %s", ev.Type, table)
				}
			case *nftables.Set:
				if d.Table != nil && d.Table.Name == table {
					t.Fatalf("event %d on set %s of %s", ev.Type, d.Name, table)
				}
			}
		case <-timeout:
			t.Fatal("no monitor event for the marker table")
		}
	}
}

// TestPublishedUDP: datagrams from outside reach the tasks, spread, with
// the client's address, and the replies come back.
func TestPublishedUDP(t *testing.T) {
	l := newLab(t, 3)
	l.sync(nil, l.udpPort(l.backends()...))
	got := count(t, 30, func() (reply, error) {
		return askUDP(l.clientNs, netip.AddrPortFrom(l.hostOut, l.pubUDP))
	}, l.client.String())
	assertSpread(t, got, 5, "t0", "t1", "t2")
}

// TestForget: a UDP flow keeps going to a backend Sync removed until
// Forget drops its conntrack entries; then it is balanced again.
func TestForget(t *testing.T) {
	l := newLab(t, 3)
	l.sync(nil, l.udpPort(l.backends()...))
	// One socket, so one flow, all along.
	c := mustDialUDP(t, l.clientNs, netip.AddrPortFrom(l.hostOut, l.pubUDP))
	first, err := udpRoundTrip(c)
	if err != nil {
		t.Fatal(err)
	}
	var gone netip.Addr
	var keep []int
	for i, task := range l.tasks {
		if task.name == first.task {
			gone = task.addr
		} else {
			keep = append(keep, i)
		}
	}
	l.sync(nil, l.udpPort(l.backends(keep...)...))
	if r, err := udpRoundTrip(c); err != nil || r.task != first.task {
		t.Fatalf("flow after Sync went to %+v (%v), want still %s: conntrack keeps it", r, err, first.task)
	}
	if n := replyEntries(t, gone); n == 0 {
		t.Fatalf("no conntrack entry with reply source %s before Forget", gone)
	}

	if err := l.m.Forget(gone); err != nil {
		t.Fatal(err)
	}
	if n := replyEntries(t, gone); n != 0 {
		t.Errorf("%d conntrack entries with reply source %s after Forget", n, gone)
	}
	r, err := udpRoundTrip(c)
	if err != nil || r.task == first.task || r.task == "" {
		t.Errorf("flow after Forget went to %+v (%v), want another task than %s", r, err, first.task)
	}
}

func mustDialUDP(t *testing.T, ns string, addr netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.Dial("udp4", addr.String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// replyEntries counts the host's conntrack entries whose reply source is
// addr.
func replyEntries(t *testing.T, addr netip.Addr) int {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if a, ok := netip.AddrFromSlice(f.Reverse.SrcIP); ok && a.Unmap() == addr {
			n++
		}
	}
	return n
}

// TestClose: Close removes the table, also twice; Sync after Close makes
// it again, and traffic is balanced again.
func TestClose(t *testing.T) {
	l := newLab(t, 1)
	l.sync(nil, l.port(l.backends()...))
	before, err := Rules(l.table)
	if err != nil || len(before) == 0 {
		t.Fatalf("Rules after Sync: %q, %v", before, err)
	}
	for i := range 2 {
		if err := l.m.Close(); err != nil {
			t.Fatalf("Close %d: %v", i+1, err)
		}
	}
	if tableExists(t, l.table) {
		t.Errorf("table %s still there after Close", l.table)
	}
	if rules, err := Rules(l.table); err != nil || len(rules) != 0 {
		t.Errorf("Rules after Close: %q, %v", rules, err)
	}
	pub := netip.AddrPortFrom(l.hostOut, l.pub)
	if r, err := askTCP(l.clientNs, pub); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after Close: answer %+v, error %v; want connection refused", r, err)
	}

	l.sync(nil, l.port(l.backends()...))
	if rules, err := Rules(l.table); err != nil || !slices.Equal(rules, before) {
		t.Errorf("Rules after Sync after Close: %q (%v), want %q", rules, err, before)
	}
	if r, err := askTCP(l.clientNs, pub); err != nil || r.task != "t0" {
		t.Errorf("after Sync again: %+v, %v", r, err)
	}
}

// TestRules lists the comments of a table with every kind of rule, in
// chain order, and a frontend without backends makes none.
func TestRules(t *testing.T) {
	m, table := newManager(t)
	a := netip.MustParseAddr
	err := m.Sync(
		[]VIP{
			{Name: "web", Addr: a("10.99.0.100"), Source: netip.MustParsePrefix("10.99.0.0/24"), Backends: []netip.Addr{a("10.99.0.2"), a("10.99.0.3")}},
			{Name: "db", Addr: a("10.99.0.50"), Source: netip.MustParsePrefix("10.99.0.0/24"), Backends: []netip.Addr{a("10.99.0.4")}},
			{Name: "idle", Addr: a("10.99.0.60"), Source: netip.MustParsePrefix("10.99.0.0/24")},
		},
		[]Port{
			{Name: "web", Port: 443, Proto: "tcp", Target: 8443, Backends: []netip.Addr{a("10.99.0.2")}},
			{Name: "dns", Port: 53, Proto: "udp", Target: 53, Backends: []netip.Addr{a("10.99.0.2"), a("10.99.0.9")}},
			{Name: "web", Port: 80, Proto: "tcp", Target: 8080, Backends: []netip.Addr{a("10.99.0.3")}},
		})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"vip db 10.99.0.50 from 10.99.0.0/24",
		"vip web 10.99.0.100 from 10.99.0.0/24",
		"published ports",
		"vip db 10.99.0.50 from host",
		"vip web 10.99.0.100 from host",
		"published ports",
		"port web 80/tcp hairpin", "port web 80/tcp",
		"port web 443/tcp hairpin", "port web 443/tcp",
		"port dns 53/udp hairpin", "port dns 53/udp",
		"masquerade marked",
	}
	got, err := Rules(table)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Rules:\n%s\nwant:\n%s\n(%v)", strings.Join(got, "\n"), strings.Join(want, "\n"), err)
	}
	t.Logf("nft list table ip %s:\n%s", table, nftList(table))
}

// newManager returns a Manager of a table of its own, for tests that
// look at rules only; the table is checked gone at the end.
func newManager(t testing.TB) (*Manager, string) {
	t.Helper()
	testutil.RequiresRoot(t)
	b := make([]byte, 2)
	rand.Read(b)
	table := "shd" + hex.EncodeToString(b)
	m, err := New(Config{Table: table, BridgePrefix: table + "-br", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if tableExists(t, table) {
			t.Errorf("table %s left", table)
		}
	})
	return m, table
}
