package allocator

import (
	"slices"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func ipam(n *typesv1.Network) (subnet, gateway, rng string) {
	c := n.GetIpam().GetConfigs()
	if len(c) == 0 {
		return "", "", ""
	}
	return c[0].GetSubnet(), c[0].GetGateway(), c[0].GetRange()
}

func TestCarvingTakesLowestFreeSlash24(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	for i, want := range []string{"10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"} {
		n := mkNetwork("n"+string(rune('a'+i)), "st_net")
		changed, err := a.AllocateNetwork(n)
		if err != nil || !changed {
			t.Fatalf("AllocateNetwork = %v, %v", changed, err)
		}
		sub, gw, rng := ipam(n)
		if sub != want || gw != want[:len(want)-4]+"1" || rng != "" {
			t.Fatalf("network %d: subnet %s gateway %s range %q, want %s with gateway .1", i, sub, gw, rng, want)
		}
	}
}

func TestCarvingSkipsExplicitSubnets(t *testing.T) {
	explicit := mkNetwork("x", "st_explicit", subnet("10.0.1.0/24"))
	big := mkNetwork("big", "st_big", subnet("10.0.4.0/22"))
	a1, a2, a3 := mkNetwork("a1", "st_a1"), mkNetwork("a2", "st_a2"), mkNetwork("a3", "st_a3")
	// The explicit networks are stored but not allocated yet: automatic
	// carving, which runs first here, must still leave their subnets.
	a := mustNew(t, []*typesv1.Network{explicit, big, a1, a2, a3}, nil, nil)
	for _, n := range []*typesv1.Network{a1, a2, a3, explicit, big} {
		mustNetwork(t, a, n)
	}
	for n, want := range map[*typesv1.Network]string{
		a1: "10.0.0.0/24", a2: "10.0.2.0/24", a3: "10.0.3.0/24",
		explicit: "10.0.1.0/24", big: "10.0.4.0/22",
	} {
		if sub, _, _ := ipam(n); sub != want {
			t.Errorf("%s: subnet %s, want %s", n.GetId(), sub, want)
		}
	}
	// The next automatic one jumps over the /22 at once.
	a4 := mkNetwork("a4", "st_a4")
	mustNetwork(t, a, a4)
	if sub, _, _ := ipam(a4); sub != "10.0.8.0/24" {
		t.Errorf("after the /22: %s, want 10.0.8.0/24", sub)
	}
}

func TestCarvingSkipsSubnetsOutsideThePoolsGrid(t *testing.T) {
	// An explicit /16 covering the start of the pool is skipped whole.
	a := mustNew(t, nil, nil, nil)
	mustNetwork(t, a, mkNetwork("wide", "st_wide", subnet("10.0.0.0/16")))
	n := mkNetwork("auto", "st_auto")
	mustNetwork(t, a, n)
	if sub, _, _ := ipam(n); sub != "10.1.0.0/24" {
		t.Fatalf("subnet %s, want 10.1.0.0/24", sub)
	}
}

func TestExplicitIPAMHonoured(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	n := mkNetwork("n", "st_front", &typesv1.IPAMConfig{Subnet: "172.28.0.0/16", Range: "172.28.5.0/24", Gateway: "172.28.5.254"})
	mustNetwork(t, a, n)
	sub, gw, rng := ipam(n)
	if sub != "172.28.0.0/16" || gw != "172.28.5.254" || rng != "172.28.5.0/24" {
		t.Fatalf("ipam %s %s %s", sub, gw, rng)
	}
	// Spec stays as the user wrote it; the allocation is beside it.
	if n.GetSpec().GetIpam().GetConfigs()[0].GetGateway() != "172.28.5.254" {
		t.Fatalf("spec changed: %v", n.GetSpec().GetIpam())
	}
}

func TestNetworkConfigErrors(t *testing.T) {
	other := mkNetwork("o", "st_other", subnet("10.0.1.0/24"))
	for _, tc := range []struct {
		name string
		cfg  *typesv1.IPAMConfig
		kind error
		says []string
	}{
		{"overlaps another network", subnet("10.0.1.128/25"), ErrInUse, []string{"st_new", "10.0.1.128/25", "overlaps", "10.0.1.0/24", "st_other"}},
		{"contains another network", subnet("10.0.0.0/16"), ErrInUse, []string{"st_new", "st_other"}},
		{"same subnet", subnet("10.0.1.0/24"), ErrInUse, []string{"st_other"}},
		{"host bits", subnet("10.0.2.5/24"), ErrInvalid, []string{"it should be 10.0.2.0/24"}},
		{"not a subnet", subnet("banana"), ErrInvalid, []string{"invalid subnet"}},
		{"ipv6", subnet("fd00::/64"), ErrInvalid, []string{"IPv4"}},
		{"too small", subnet("10.0.2.0/31"), ErrInvalid, []string{"/30"}},
		{"too large", subnet("0.0.0.0/4"), ErrInvalid, []string{"/8"}},
		{"gateway outside", &typesv1.IPAMConfig{Subnet: "10.0.2.0/24", Gateway: "10.0.3.1"}, ErrInvalid, []string{"gateway 10.0.3.1"}},
		{"gateway is broadcast", &typesv1.IPAMConfig{Subnet: "10.0.2.0/24", Gateway: "10.0.2.255"}, ErrInvalid, []string{"gateway"}},
		{"range outside", &typesv1.IPAMConfig{Subnet: "10.0.2.0/24", Range: "10.0.3.0/25"}, ErrInvalid, []string{"ip_range 10.0.3.0/25"}},
		{"range larger", &typesv1.IPAMConfig{Subnet: "10.0.2.0/24", Range: "10.0.0.0/16"}, ErrInvalid, []string{"ip_range"}},
		{"range without subnet", &typesv1.IPAMConfig{Range: "10.0.2.0/25"}, ErrInvalid, []string{"need a subnet"}},
		{"range of no host", &typesv1.IPAMConfig{Subnet: "10.0.2.0/24", Range: "10.0.2.255/32"}, ErrInvalid, []string{"no usable address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, nil, nil, nil)
			mustNetwork(t, a, other)
			n := mkNetwork("new", "st_new", tc.cfg)
			changed, err := a.AllocateNetwork(n)
			wantErr(t, err, tc.kind, tc.says...)
			if changed || n.GetIpam() != nil {
				t.Fatalf("failed allocation changed the network: %v", n.GetIpam())
			}
			// Nothing was registered: the refused subnet is free for others.
			if _, ok := a.networks["new"]; ok {
				t.Fatal("refused network registered")
			}
		})
	}
}

func TestAllocateNetworkIsIdempotent(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	n := mkNetwork("n", "st_net")
	mustNetwork(t, a, n)
	before := a.state()
	for range 2 {
		if changed, err := a.AllocateNetwork(n); changed || err != nil {
			t.Fatalf("again: %v, %v", changed, err)
		}
	}
	// An allocated network New did not know is registered, not changed.
	b := mustNew(t, nil, nil, nil)
	if changed, err := b.AllocateNetwork(n); changed || err != nil {
		t.Fatalf("unknown allocated network: %v, %v", changed, err)
	}
	if got := b.state(); !slices.Equal(got, before) {
		t.Fatalf("state differs:\n%v\n%v", got, before)
	}
}

func TestNewRefusesOverlappingAllocatedNetworks(t *testing.T) {
	x := mkNetwork("x", "st_x")
	x.Ipam = &typesv1.IPAMOptions{Configs: []*typesv1.IPAMConfig{{Subnet: "10.0.0.0/24", Gateway: "10.0.0.1"}}}
	y := mkNetwork("y", "st_y")
	y.Ipam = &typesv1.IPAMOptions{Configs: []*typesv1.IPAMConfig{{Subnet: "10.0.0.0/23", Gateway: "10.0.0.1"}}}
	_, err := New([]*typesv1.Network{x, y}, nil, nil)
	wantErr(t, err, ErrInUse, "st_x", "st_y")
}

func TestReleaseNetworkFreesItsSubnet(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	n1, n2 := mkNetwork("n1", "st_one"), mkNetwork("n2", "st_two")
	mustNetwork(t, a, n1)
	mustNetwork(t, a, n2)
	a.ReleaseNetwork(n1)
	n3 := mkNetwork("n3", "st_three")
	mustNetwork(t, a, n3)
	if sub, _, _ := ipam(n3); sub != "10.0.0.0/24" {
		t.Fatalf("subnet %s, want the released 10.0.0.0/24", sub)
	}
}
