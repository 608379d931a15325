package dnat

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

// TestRulesMesh: a port with two local tasks and two remote nodes
// (weights 1 and 2) and a VIP with a local and a remote task make the
// endpoints map (address . port), the nodes and vip_local sets and their
// masquerade rules.
func TestRulesMesh(t *testing.T) {
	m, table := newManager(t)
	a := netip.MustParseAddr
	if err := m.SetNodes([]netip.Addr{a("192.0.2.9"), a("192.0.2.7")}); err != nil {
		t.Fatal(err)
	}
	err := m.Sync(
		[]VIP{{Name: "api", Addr: a("10.99.0.100"), Source: netip.MustParsePrefix("10.99.0.0/24"),
			Backends: []netip.Addr{a("10.99.0.2")}, Remote: []netip.Addr{a("10.99.0.7")}}},
		[]Port{{Name: "web", Port: 4000, Proto: "tcp", Target: 80,
			Backends: []netip.Addr{a("10.99.0.3"), a("10.99.0.2")},
			Remote:   []Remote{{Node: a("192.0.2.8"), Weight: 2}, {Node: a("192.0.2.7"), Weight: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	listing := nftList(table)
	t.Logf("nft list table ip %s:\n%s", table, listing)

	want := []string{
		"vip api 10.99.0.100 from 10.99.0.0/24",
		"published ports",
		"vip api 10.99.0.100 from host",
		"published ports",
		"port web 4000/tcp hairpin", "port web 4000/tcp from a node", "port web 4000/tcp",
		"masquerade marked", "masquerade to another node", "masquerade vip to a local task", "clear marks",
	}
	if got, err := Rules(table); err != nil || !slices.Equal(got, want) {
		t.Errorf("Rules:\n%s\nwant:\n%s\n(%v)", strings.Join(got, "\n"), strings.Join(want, "\n"), err)
	}

	// The map, read back from the kernel: local tasks on the target
	// port, remote nodes on the published port, as many times as their
	// weight.
	wantElems := []endpoint{
		{a("10.99.0.2"), 80}, {a("10.99.0.3"), 80},
		{a("192.0.2.7"), 4000}, {a("192.0.2.8"), 4000}, {a("192.0.2.8"), 4000},
	}
	if got := endpointsOf(t, table); !slices.Equal(got, wantElems) {
		t.Errorf("map %s: %v, want %v", mapEndpoints, got, wantElems)
	}
	if got := setOf(t, table, setNodes); !slices.Equal(got, []netip.Addr{a("192.0.2.7"), a("192.0.2.8"), a("192.0.2.9")}) {
		t.Errorf("set %s: %v", setNodes, got)
	}
	if got := setOf(t, table, setVIPLocal); !slices.Equal(got, []netip.Addr{a("10.99.0.2")}) {
		t.Errorf("set %s: %v", setVIPLocal, got)
	}

	// nft's own reading of the same rules.
	if strings.HasPrefix(listing, "nft:") || listing == "" {
		t.Skip("no nft to read the table back")
	}
	for _, s := range []string{
		"type 0 : ipv4_addr . inet_service",
		"0 : 10.99.0.2 . 80, 1 : 10.99.0.3 . 80, 2 : 192.0.2.7 . 4000, 3 : 192.0.2.8 . 4000, 4 : 192.0.2.8 . 4000",
		"ip saddr @nodes fib saddr type != local tcp dport 4000 dnat to numgen inc mod 2 offset 2 map @backends:80",
		"tcp dport 4000 meta mark set meta mark | 0x10000000 dnat ip to numgen inc mod 5 map @endpoints",
		"ip saddr 10.99.0.0/24 meta mark set meta mark | 0x08000000 dnat to numgen inc mod 2 map @backends",
		"ip daddr 10.99.0.100 meta mark set meta mark | 0x20000000 dnat to 10.99.0.2",
		"meta mark & 0x10000000 != 0x00000000 ip daddr @nodes meta mark set meta mark & 0xc7ffffff masquerade",
		"meta mark & 0x08000000 != 0x00000000 ip daddr @vip_local meta mark set meta mark & 0xc7ffffff masquerade",
	} {
		if !strings.Contains(listing, s) {
			t.Errorf("nft listing lacks %q", s)
		}
	}
}

// endpointsOf reads the endpoints map of table, in key order.
func endpointsOf(t *testing.T, table string) []endpoint {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.GetSetByName(tableRef(table), mapEndpoints)
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]endpoint, len(elems))
	for _, e := range elems {
		k := int(binaryutil.NativeEndian.Uint32(e.Key))
		if k >= len(out) || len(e.Val) != 8 {
			t.Fatalf("element %x : %x", e.Key, e.Val)
		}
		out[k] = endpoint{netip.AddrFrom4([4]byte(e.Val[:4])), uint16(e.Val[4])<<8 | uint16(e.Val[5])}
	}
	return out
}

// setOf reads a set of addresses of table, sorted.
func setOf(t *testing.T, table, name string) []netip.Addr {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	set, err := c.GetSetByName(tableRef(table), name)
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, e := range elems {
		out = append(out, netip.AddrFrom4([4]byte(e.Key)))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// askEach asks n times and counts the answers by task, and checks the
// source each task saw: want maps a task to the source it must see.
func askEach(t *testing.T, n int, ask func() (reply, error), want map[string]string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		r, err := ask()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if src, ok := want[r.task]; !ok {
			t.Errorf("request %d: answered by %s, want one of %v", i, r.task, want)
		} else if r.source != src {
			t.Errorf("request %d: %s saw source %s, want %s", i, r.task, r.source, src)
		}
		got[r.task]++
	}
	return got
}

func assertCounts(t *testing.T, got, want map[string]int) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("answers %v, want %v", got, want)
	}
}

// TestMeshPublishedPort: a published port with two local tasks and
// another node of weight 2 sends half the connections there, masqueraded
// to the host's address, and the rest to the local tasks with the
// client's address; the replies reach the client. A connection from a
// node is a second hop and stays local.
func TestMeshPublishedPort(t *testing.T) {
	l := newLab(t, 2)
	nb, via := l.addNode("nb")
	port := l.port(l.backends()...)
	port.Remote = []Remote{{Node: nb.addr, Weight: 2}}
	udp := l.udpPort(l.backends()...)
	udp.Remote = port.Remote
	l.sync(nil, port, udp)
	t.Logf("nft list table ip %s:\n%s", l.table, nftList(l.table))

	pub := netip.AddrPortFrom(l.hostOut, l.pub)
	fromClient := map[string]string{"t0": l.client.String(), "t1": l.client.String(), "nb": via.String()}
	got := askEach(t, 20, func() (reply, error) { return askTCP(l.clientNs, pub) }, fromClient)
	assertCounts(t, got, map[string]int{"t0": 5, "t1": 5, "nb": 10})
	got = askEach(t, 8, func() (reply, error) {
		return askUDP(l.clientNs, netip.AddrPortFrom(l.hostOut, l.pubUDP))
	}, fromClient)
	assertCounts(t, got, map[string]int{"t0": 2, "t1": 2, "nb": 4})

	// A task calling the published port (hairpin) is masqueraded either
	// way: to the bridge's address for a local task, to the host's
	// address towards the node for the node.
	got = askEach(t, 8, func() (reply, error) { return askTCP(l.tasks[0].ns, pub) },
		map[string]string{"t0": l.gw.String(), "t1": l.gw.String(), "nb": via.String()})
	assertCounts(t, got, map[string]int{"t0": 2, "t1": 2, "nb": 4})

	// The host's own connections are first hops, also when its address
	// is among the nodes.
	if err := l.m.SetNodes([]netip.Addr{l.hostOut, nb.addr}); err != nil {
		t.Fatal(err)
	}
	got = askEach(t, 8, func() (reply, error) { return askTCP("", pub) },
		map[string]string{"t0": l.hostOut.String(), "t1": l.hostOut.String(), "nb": via.String()})
	assertCounts(t, got, map[string]int{"t0": 2, "t1": 2, "nb": 4})

	// From a node, here the client once listed: local tasks only.
	if err := l.m.SetNodes([]netip.Addr{l.client, nb.addr}); err != nil {
		t.Fatal(err)
	}
	got = askEach(t, 10, func() (reply, error) { return askTCP(l.clientNs, pub) },
		map[string]string{"t0": l.client.String(), "t1": l.client.String()})
	assertCounts(t, got, map[string]int{"t0": 5, "t1": 5})

	// Without local tasks, a second hop is left to the host, where
	// nothing listens; other clients still reach the node.
	port.Backends = nil
	l.sync(nil, port)
	if r, err := askTCP(l.clientNs, pub); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("second hop without local tasks: answer %+v, error %v; want connection refused", r, err)
	}
	got = askEach(t, 3, func() (reply, error) { return askTCP(l.tasks[1].ns, pub) }, map[string]string{"nb": via.String()})
	assertCounts(t, got, map[string]int{"nb": 3})
	if err := l.m.SetNodes(nil); err != nil {
		t.Fatal(err)
	}
	got = askEach(t, 3, func() (reply, error) { return askTCP(l.clientNs, pub) }, map[string]string{"nb": via.String()})
	assertCounts(t, got, map[string]int{"nb": 3})
}

// TestVIPRemote: a VIP with a local task and a remote one (a namespace
// on the same bridge stands in for a task across the overlay: the same
// L2). Callers reach both; the local one sees the bridge's address
// (masqueraded), the remote one the caller's own, and its reply, which
// goes to the caller directly, is rewritten back to come from the VIP.
func TestVIPRemote(t *testing.T) {
	l := newLab(t, 3)
	// t0 is local, t1 remote, t2 calls.
	l.sync([]VIP{{Name: "api", Addr: l.vip, Source: l.subnet, Backends: l.backends(0), Remote: l.backends(1)}})
	t.Logf("nft list table ip %s:\n%s", l.table, nftList(l.table))

	vip := netip.AddrPortFrom(l.vip, l.target)
	caller := l.tasks[2]
	want := map[string]string{"t0": l.gw.String(), "t1": caller.addr.String()}
	// dialTCP checks the reply came from the VIP: the kernel would not
	// have matched it to the socket otherwise.
	got := askEach(t, 20, func() (reply, error) { return askTCP(caller.ns, vip) }, want)
	assertCounts(t, got, map[string]int{"t0": 10, "t1": 10})
	got = askEach(t, 6, func() (reply, error) { return askUDP(caller.ns, vip) }, want)
	assertCounts(t, got, map[string]int{"t0": 3, "t1": 3})

	// The local task calling its own VIP: to itself (hairpin,
	// masqueraded) or to the remote one, which sees its address.
	got = askEach(t, 6, func() (reply, error) { return askTCP(l.tasks[0].ns, vip) },
		map[string]string{"t0": l.gw.String(), "t1": l.tasks[0].addr.String()})
	assertCounts(t, got, map[string]int{"t0": 3, "t1": 3})

	// The host reaches the local task only.
	got = askEach(t, 4, func() (reply, error) { return askTCP("", vip) }, map[string]string{"t0": l.gw.String()})
	assertCounts(t, got, map[string]int{"t0": 4})

	// Only remote tasks: no rule for the host, whose connection meets
	// the host's sockets.
	l.sync([]VIP{{Name: "api", Addr: l.vip, Source: l.subnet, Remote: l.backends(1)}})
	got = askEach(t, 3, func() (reply, error) { return askTCP(caller.ns, vip) }, map[string]string{"t1": caller.addr.String()})
	assertCounts(t, got, map[string]int{"t1": 3})
	if r, err := askTCP("", vip); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("host → VIP with remote tasks only: answer %+v, error %v; want connection refused", r, err)
	}
}

// TestForgetNode: a UDP flow the routing mesh sent to another node keeps
// going there after Sync dropped the node, until Forget; Forget leaves
// the host's own flow with the node alone, which was not DNATed.
func TestForgetNode(t *testing.T) {
	l := newLab(t, 1)
	nb, _ := l.addNode("nb")
	udp := l.udpPort()
	udp.Remote = []Remote{{Node: nb.addr, Weight: 1}}
	l.sync(nil, udp)
	c := mustDialUDP(t, l.clientNs, netip.AddrPortFrom(l.hostOut, l.pubUDP))
	if r, err := udpRoundTrip(c); err != nil || r.task != "nb" {
		t.Fatalf("flow went to %+v (%v), want nb", r, err)
	}
	direct := mustDialUDP(t, "", netip.AddrPortFrom(nb.addr, l.pubUDP))
	if r, err := udpRoundTrip(direct); err != nil || r.task != "nb" {
		t.Fatalf("host → nb: %+v (%v)", r, err)
	}
	l.sync(nil, l.udpPort(l.backends()...))
	if r, err := udpRoundTrip(c); err != nil || r.task != "nb" {
		t.Fatalf("flow after Sync went to %+v (%v), want still nb", r, err)
	}
	if err := l.m.Forget(nb.addr); err != nil {
		t.Fatal(err)
	}
	if r, err := udpRoundTrip(c); err != nil || r.task != "t0" {
		t.Errorf("flow after Forget went to %+v (%v), want t0", r, err)
	}
	if n := replyEntries(t, nb.addr); n != 1 {
		t.Errorf("%d conntrack entries with reply source %s after Forget, want the host's own flow", n, nb.addr)
	}
}

// TestSetNodesWrites: SetNodes writes the table only when a rule uses
// the list, and never the same list twice.
func TestSetNodesWrites(t *testing.T) {
	m, table := newManager(t)
	a := netip.MustParseAddr
	if err := m.SetNodes([]netip.Addr{a("192.0.2.7")}); err != nil || m.writes != 0 {
		t.Fatalf("SetNodes before Sync: %v, %d writes", err, m.writes)
	}
	local := Port{Name: "web", Port: 80, Proto: "tcp", Target: 8080, Backends: []netip.Addr{a("10.99.0.2")}}
	if err := m.Sync(nil, []Port{local}); err != nil {
		t.Fatal(err)
	}
	writes := m.writes
	// No port has remote nodes: nothing reads the list.
	assertNoWrite(t, table, func() error { return m.SetNodes([]netip.Addr{a("192.0.2.8")}) })
	mesh := local
	mesh.Remote = []Remote{{Node: a("192.0.2.9"), Weight: 1}}
	if err := m.Sync(nil, []Port{mesh}); err != nil {
		t.Fatal(err)
	}
	if got := setOf(t, table, setNodes); !slices.Equal(got, []netip.Addr{a("192.0.2.8"), a("192.0.2.9")}) {
		t.Errorf("set %s: %v, want the last SetNodes and the remote node", setNodes, got)
	}
	assertNoWrite(t, table, func() error { return m.SetNodes([]netip.Addr{a("192.0.2.8"), a("192.0.2.8")}) })
	if err := m.SetNodes([]netip.Addr{a("192.0.2.10")}); err != nil {
		t.Fatal(err)
	}
	if got := setOf(t, table, setNodes); !slices.Equal(got, []netip.Addr{a("192.0.2.9"), a("192.0.2.10")}) {
		t.Errorf("set %s after SetNodes: %v", setNodes, got)
	}
	if m.writes != writes+2 {
		t.Errorf("%d batches, want 2: the Sync with a remote node and the SetNodes that changed the list", m.writes-writes)
	}
	if err := m.SetNodes([]netip.Addr{a("fd00::1")}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetNodes IPv6: %v, want ErrInvalid", err)
	}
}
