package dnat

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
)

// BenchmarkSync times one Sync of a node with 150 services, each with a
// VIP and a published TCP port over 5 tasks, in which one task of one
// service changes: the whole table is rebuilt, 600 rules and a map of
// 1500 elements in one batch.
func BenchmarkSync(b *testing.B) {
	m, _ := newManager(b)
	vips, ports := manyServices(150, 5)
	if err := m.Sync(vips, ports); err != nil {
		b.Fatal(err)
	}
	a, c := netip.MustParseAddr("10.100.0.10"), netip.MustParseAddr("10.100.0.99")
	for i := 0; b.Loop(); i++ {
		// The first task of the first service is replaced, then back.
		next := c
		if i%2 == 1 {
			next = a
		}
		vips[0].Backends[0], ports[0].Backends[0] = next, next
		if err := m.Sync(vips, ports); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSyncMany applies a node with 400 services, 1600 rules and 4000 map
// elements: past the default socket buffers and past one message of
// elements.
func TestSyncMany(t *testing.T) {
	m, table := newManager(t)
	const services, tasks = 400, 5
	vips, ports := manyServices(services, tasks)
	if err := m.Sync(vips, ports); err != nil {
		t.Fatal(err)
	}
	rules, err := Rules(table)
	if err != nil {
		t.Fatal(err)
	}
	// Per service: a VIP rule in prerouting and in output, and two in
	// ports; plus the two jumps and masquerade.
	if want := 4*services + 3; len(rules) != want {
		t.Errorf("%d rules, want %d", len(rules), want)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tbl := tableRef(table)
	set, err := c.GetSetByName(tbl, mapBackends)
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * services * tasks; len(elems) != want {
		t.Errorf("map %s has %d elements, want %d", mapBackends, len(elems), want)
	}
}

// manyServices makes services with a VIP and a published TCP port each,
// over the same tasks.
func manyServices(services, tasks int) ([]VIP, []Port) {
	vips := make([]VIP, services)
	ports := make([]Port, services)
	for s := range services {
		// A /24 per service: 10.100.0.0/24, 10.100.1.0/24, …
		net := [4]byte{10, byte(100 + s/200), byte(s % 200), 0}
		var backends []netip.Addr
		for i := range tasks {
			backends = append(backends, netip.AddrFrom4([4]byte{net[0], net[1], net[2], byte(10 + i)}))
		}
		name := fmt.Sprintf("svc%03d", s)
		vips[s] = VIP{Name: name, Addr: netip.AddrFrom4([4]byte{net[0], net[1], net[2], 2}),
			Source: netip.PrefixFrom(netip.AddrFrom4(net), 24), Backends: backends}
		ports[s] = Port{Name: name, Port: uint16(30000 + s), Proto: "tcp", Target: 8080, Backends: slices.Clone(backends)}
	}
	return vips, ports
}
