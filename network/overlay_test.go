package network

import (
	"errors"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/identity"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// overlayNet is an overlay network on subnet, with the allocator's VNI
// when vni is not 0.
func overlayNet(id, subnet string, vni uint32) *typesv1.Network {
	n := network(id, subnet, "")
	n.Spec = &typesv1.NetworkSpec{Driver: driverOverlay}
	n.Vni = vni
	return n
}

func TestOverlayVNI(t *testing.T) {
	stack := &typesv1.Annotations{Labels: map[string]string{stackLabel: "s"}}
	for _, tc := range []struct {
		name    string
		n       *typesv1.Network
		want    uint32 // 0: node-local; 1: derived from the id
		wantErr string
	}{
		{name: "overlay", n: &typesv1.Network{Id: "a", Spec: &typesv1.NetworkSpec{Driver: "overlay"}}, want: 1},
		{name: "explicit", n: &typesv1.Network{Id: "a", Vni: 4097, Spec: &typesv1.NetworkSpec{Driver: "overlay"}}, want: 4097},
		{name: "stack default", n: &typesv1.Network{Id: "a", Spec: &typesv1.NetworkSpec{Annotations: stack}}, want: 1},
		{name: "no driver", n: &typesv1.Network{Id: "a"}},
		{name: "bridge", n: &typesv1.Network{Id: "a", Vni: 7, Spec: &typesv1.NetworkSpec{Driver: "bridge", Annotations: stack}}},
		{name: "other driver", n: &typesv1.Network{Id: "a", Spec: &typesv1.NetworkSpec{Driver: "macvlan"}}, wantErr: "driver"},
		{name: "vni too big", n: &typesv1.Network{Id: "a", Vni: 1 << 24, Spec: &typesv1.NetworkSpec{Driver: "overlay"}}, wantErr: "24-bit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := overlayVNI(tc.n)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid saying %q", err, tc.wantErr)
				}
				return
			}
			want := tc.want
			if want == 1 {
				want = derivedVNI(tc.n.GetId())
			}
			if err != nil || got != want {
				t.Errorf("overlayVNI = %d, %v; want %d", got, err, want)
			}
		})
	}
}

func TestDerivedVNI(t *testing.T) {
	seen := map[uint32]string{}
	for range 1000 {
		id := identity.NewID()
		v := derivedVNI(id)
		if !validVNI(v) || v == maxVNI {
			t.Fatalf("derivedVNI(%s) = %d, out of range", id, v)
		}
		if v != derivedVNI(id) {
			t.Fatalf("derivedVNI(%s) is not stable", id)
		}
		if other, dup := seen[v]; dup {
			// 1000 ids collide with probability 3%: the chance this
			// fails is that, and it says the hash is not spreading.
			t.Logf("networks %s and %s share VNI %d", other, id, v)
		}
		seen[v] = id
	}
	if len(seen) < 990 {
		t.Errorf("1000 network ids drew only %d VNIs", len(seen))
	}
	if derivedVNI("net1") == derivedVNI("net2") {
		t.Error("net1 and net2 have the same VNI")
	}
}

func TestParseOverlayAttachment(t *testing.T) {
	n := overlayNet("n", "10.0.1.0/24", 0)
	at, err := parseAttachment(attach(n, "10.0.1.5/24"))
	if err != nil || at.vni != derivedVNI("n") || at.mtu != 1450 {
		t.Errorf("overlay attachment: vni %d mtu %d %v; want %d 1450", at.vni, at.mtu, err, derivedVNI("n"))
	}
	n.Spec.DriverOpts = map[string]string{mtuOption: "1400"}
	if at, err := parseAttachment(attach(n, "10.0.1.5/24")); err != nil || at.mtu != 1400 {
		t.Errorf("overlay attachment with MTU option: mtu %d %v; want 1400", at.mtu, err)
	}
	if at, err := parseAttachment(attach(network("n", "10.0.1.0/24", ""), "10.0.1.5/24")); err != nil || at.vni != 0 || at.mtu != 1500 {
		t.Errorf("node-local attachment: vni %d mtu %d %v", at.vni, at.mtu, err)
	}
}

func TestOverlayNamesAndAlias(t *testing.T) {
	for _, prefix := range []string{"shl", "sht1a2b", "a"} {
		for _, id := range []string{"k3j4h5g6f7d8s9a0q1w2e3r4t", "ab", "UPPER/weird id"} {
			br := bridgeName(prefix, id, 1)
			vx := vxlanName(prefix, br)
			if len(vx) > ifNameMax || len(vx) != len(br) || !strings.HasPrefix(vx, prefix+"-vx-") || strings.HasPrefix(vx, bridgePrefix(prefix)) {
				t.Errorf("vxlanName(%q, %q) = %q", prefix, br, vx)
			}
		}
	}
	if got := vxlanName("shl", bridgeName("shl", "k3j4h5g6f7d8s9a0q1w2e3r4t", 0)); got != "shl-vx-k3j4h5g6" {
		t.Errorf("VXLAN name = %q, want shl-vx-k3j4h5g6 (DESIGN.md)", got)
	}
	o, ok := parseAlias(overlayBridgeAlias("net1", 4242))
	if !ok || o != (owner{netID: "net1", vni: 4242}) {
		t.Errorf("overlay bridge alias round trip: %+v %v", o, ok)
	}
	for _, a := range []string{"shoal net=n vni=0", "shoal net=n vni=x", "shoal net=n vni=16777216"} {
		if _, ok := parseAlias(a); ok {
			t.Errorf("parseAlias(%q) accepted", a)
		}
	}
}

func TestNormalizePeers(t *testing.T) {
	self := net.ParseIP("192.0.2.1")
	other := net.ParseIP("192.0.2.2")
	ip := func(s string) net.IP { return net.ParseIP(s) }
	got, err := normalizePeers(self, []Peer{
		{IP: ip("10.0.1.9"), Node: other},
		{IP: ip("10.0.1.7"), Node: other, MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 7}},
		{IP: ip("10.0.1.8"), Node: self}, // a local task
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].IP.Equal(ip("10.0.1.7")) || got[0].MAC.String() != "02:00:00:00:00:07" ||
		!got[1].IP.Equal(ip("10.0.1.9")) || got[1].MAC.String() != macFor(ip("10.0.1.9")).String() || !got[1].Node.Equal(other) {
		t.Errorf("normalized peers %+v", got)
	}
	for _, tc := range []struct {
		name  string
		peers []Peer
		want  string
	}{
		{"ipv6 task", []Peer{{IP: ip("fd00::1"), Node: other}}, "IPv4"},
		{"no node", []Peer{{IP: ip("10.0.1.9")}}, "node address"},
		{"node of other family", []Peer{{IP: ip("10.0.1.9"), Node: ip("fd00::2")}}, "node address"},
		{"twice", []Peer{{IP: ip("10.0.1.9"), Node: other}, {IP: ip("10.0.1.9"), Node: self}}, "twice"},
		{"same MAC", []Peer{{IP: ip("10.0.1.9"), Node: other}, {IP: ip("10.0.1.8"), Node: other, MAC: macFor(ip("10.0.1.9"))}}, "same MAC"},
		{"multicast MAC", []Peer{{IP: ip("10.0.1.9"), Node: other, MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}}}, "unicast"},
		{"short MAC", []Peer{{IP: ip("10.0.1.9"), Node: other, MAC: net.HardwareAddr{2, 0}}}, "unicast"},
	} {
		if _, err := normalizePeers(self, tc.peers); err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want ErrInvalid saying %q", tc.name, err, tc.want)
		}
	}
}

// underlay is the underlay address of the single-host tests: a
// documentation address, since no VXLAN packet is sent.
var underlay = net.ParseIP("192.0.2.10").To4()

// newOverlayEnv is newTestEnv with an underlay address.
func newOverlayEnv(t *testing.T) *testEnv {
	t.Helper()
	e := newTestEnv(t)
	e.cfg.UnderlayAddr = underlay
	m, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

// vxlanOf returns the VXLAN device of network n's bridge.
func (e *testEnv) vxlanOf(n *typesv1.Network) *netlink.Vxlan {
	e.t.Helper()
	name := vxlanName(e.cfg.Prefix, bridgeName(e.cfg.Prefix, n.Id, 0))
	l, err := netlink.LinkByName(name)
	if err != nil {
		e.t.Fatalf("VXLAN device of network %s: %v", n.Id, err)
	}
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		e.t.Fatalf("%s is a %s", name, l.Type())
	}
	return vx
}

// peerEntries describes what a VXLAN device holds, one string per
// entry: "fdb MAC dst NODE" (the device's), "br MAC" (the bridge's
// static ones) and "neigh IP MAC", sorted.
func peerEntries(t *testing.T, h *netlink.Handle, index int) []string {
	t.Helper()
	fdb, err := h.NeighList(index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range fdb {
		switch {
		case e.MasterIndex == 0:
			out = append(out, "fdb "+e.HardwareAddr.String()+" dst "+e.IP.String())
		case e.State&unix.NUD_PERMANENT == 0:
			out = append(out, "br "+e.HardwareAddr.String())
		}
	}
	neighs, err := h.NeighList(index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neighs {
		out = append(out, "neigh "+n.IP.String()+" "+n.HardwareAddr.String())
	}
	slices.Sort(out)
	return out
}

// peerWant is what peerEntries lists for peers, given as IP and node.
func peerWant(peers ...string) []string {
	var out []string
	for i := 0; i < len(peers); i += 2 {
		mac := macFor(net.ParseIP(peers[i])).String()
		out = append(out, "fdb "+mac+" dst "+peers[i+1], "br "+mac, "neigh "+peers[i]+" "+mac)
	}
	slices.Sort(out)
	return out
}

func rootHandle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// TestOverlayDevices: each overlay network's bridge gets a VXLAN port of
// its own VNI, with the overlay MTU, and a node-local network none.
func TestOverlayDevices(t *testing.T) {
	e := newOverlayEnv(t)
	nA := overlayNet(identity.NewID(), e.subnet(0), 0)
	nB := overlayNet(identity.NewID(), e.subnet(1), 0)
	nC := overlayNet(identity.NewID(), e.subnet(2), 4242)
	local := e.network(3)
	nsA, _ := e.attach("taska", attach(nA, e.addr(0, 5)), attach(local, e.addr(3, 5)))
	e.attach("taskb", attach(nB, e.addr(1, 5)))
	e.attach("taskc", attach(nC, e.addr(2, 5)))

	for _, tc := range []struct {
		n   *typesv1.Network
		vni int
	}{{nA, int(derivedVNI(nA.Id))}, {nB, int(derivedVNI(nB.Id))}, {nC, 4242}} {
		vx := e.vxlanOf(tc.n)
		br, err := netlink.LinkByName(bridgeName(e.cfg.Prefix, tc.n.Id, 0))
		if err != nil {
			t.Fatal(err)
		}
		if vx.VxlanId != tc.vni || !vx.SrcAddr.Equal(underlay) || vx.Port != DefaultVXLANPort || vx.Learning || !vx.Proxy {
			t.Errorf("%s: vni %d local %s port %d learning %v proxy %v; want vni %d local %s port %d, no learning, proxy",
				vx.Name, vx.VxlanId, vx.SrcAddr, vx.Port, vx.Learning, vx.Proxy, tc.vni, underlay, DefaultVXLANPort)
		}
		if vx.MasterIndex != br.Attrs().Index || vx.OperState == netlink.OperDown || vx.MTU != 1450 || br.Attrs().MTU != 1450 {
			t.Errorf("%s: master %d (bridge %d), state %s, MTU %d, bridge MTU %d", vx.Name, vx.MasterIndex, br.Attrs().Index, vx.OperState, vx.MTU, br.Attrs().MTU)
		}
		if o, ok := parseAlias(br.Attrs().Alias); !ok || o.vni != uint32(tc.vni) {
			t.Errorf("bridge alias %q does not carry VNI %d", br.Attrs().Alias, tc.vni)
		}
	}
	if derivedVNI(nA.Id) == derivedVNI(nB.Id) {
		t.Errorf("networks %s and %s drew the same VNI", nA.Id, nB.Id)
	}
	if _, err := netlink.LinkByName(vxlanName(e.cfg.Prefix, bridgeName(e.cfg.Prefix, local.Id, 0))); !isLinkNotFound(err) {
		t.Errorf("node-local network has a VXLAN device: %v", err)
	}
	in := nsLinks(t, nsA)
	if in["eth0"].Attrs().MTU != 1450 || in["eth1"].Attrs().MTU != 1500 {
		t.Errorf("task MTUs: overlay %d, local %d; want 1450, 1500", in["eth0"].Attrs().MTU, in["eth1"].Attrs().MTU)
	}

	// A second network with nC's VNI cannot have a device here.
	clash := overlayNet(identity.NewID(), e.subnet(4), 4242)
	if _, _, err := e.m.Attach("taskd", []*typesv1.NetworkAttachment{attach(clash, e.addr(4, 5))}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "VNI 4242") {
		t.Errorf("Attach to a network whose VNI is taken: %v, want ErrConflict naming the VNI", err)
	}
	if _, err := netlink.LinkByName(bridgeName(e.cfg.Prefix, clash.Id, 0)); !isLinkNotFound(err) {
		t.Errorf("bridge of the clashing network left: %v", err)
	}

	for _, id := range []string{"taska", "taskb", "taskc"} {
		if err := e.m.Detach(id); err != nil {
			t.Fatal(err)
		}
	}
	if links, _ := e.m.ownLinks(); len(links) != 0 {
		t.Errorf("%d links left after the last Detach", len(links))
	}
}

// TestOverlayRefusedWithoutUnderlay: a node without an underlay address
// refuses overlay networks before it changes anything.
func TestOverlayRefusedWithoutUnderlay(t *testing.T) {
	e := newTestEnv(t)
	n := overlayNet(identity.NewID(), e.subnet(0), 0)
	if _, _, err := e.m.Attach("taska", []*typesv1.NetworkAttachment{attach(n, e.addr(0, 5))}); !errors.Is(err, ErrNoUnderlay) {
		t.Errorf("Attach to an overlay without underlay: %v, want ErrNoUnderlay", err)
	}
	if err := e.m.SetPeers(n.Id, nil); !errors.Is(err, ErrNoUnderlay) {
		t.Errorf("SetPeers without underlay: %v, want ErrNoUnderlay", err)
	}
	if links, _ := e.m.ownLinks(); len(links) != 0 {
		t.Errorf("%d links made", len(links))
	}
}

// TestSetPeers: entries follow the peer set, stale and foreign ones go,
// the gateway is never a peer, and peers set before the bridge exists
// are applied when it comes.
func TestSetPeers(t *testing.T) {
	e := newOverlayEnv(t)
	h := rootHandle(t)
	n := overlayNet(identity.NewID(), e.subnet(0), 0)
	ip := func(host int) string { return ipOf(e.addr(0, host)) }
	// Before the bridge: kept.
	if err := e.m.SetPeers(n.Id, []Peer{{IP: net.ParseIP(ip(7)), Node: net.ParseIP("192.0.2.20")}}); err != nil {
		t.Fatal(err)
	}
	e.attach("taska", attach(n, e.addr(0, 5)))
	vx := e.vxlanOf(n)
	if got, want := peerEntries(t, h, vx.Index), peerWant(ip(7), "192.0.2.20"); !slices.Equal(got, want) {
		t.Errorf("entries of peers set before the bridge:\n got %q\nwant %q", got, want)
	}

	// A flood entry someone added goes with the next SetPeers.
	if out, err := exec.Command("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", vx.Name, "dst", "192.0.2.99").CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb append: %v\n%s", err, out)
	}
	peers := []Peer{
		{IP: net.ParseIP(ip(7)), Node: net.ParseIP("192.0.2.21")}, // moved
		{IP: net.ParseIP(ip(8)), Node: net.ParseIP("192.0.2.20")},
		{IP: net.ParseIP(ip(9)), Node: underlay},                        // local: skipped
		{IP: net.ParseIP(ip(1)), Node: net.ParseIP("192.0.2.20")},       // the gateway: left out
		{IP: net.ParseIP("10.99.0.1"), Node: net.ParseIP("192.0.2.20")}, // outside: left out
	}
	if err := e.m.SetPeers(n.Id, peers); err != nil {
		t.Fatal(err)
	}
	if got, want := peerEntries(t, h, vx.Index), peerWant(ip(7), "192.0.2.21", ip(8), "192.0.2.20"); !slices.Equal(got, want) {
		t.Errorf("entries after SetPeers:\n got %q\nwant %q", got, want)
	}
	if err := e.m.SetPeers(n.Id, peers[1:2]); err != nil {
		t.Fatal(err)
	}
	if got, want := peerEntries(t, h, vx.Index), peerWant(ip(8), "192.0.2.20"); !slices.Equal(got, want) {
		t.Errorf("entries after a peer left:\n got %q\nwant %q", got, want)
	}
	if err := e.m.SetPeers(n.Id, nil); err != nil {
		t.Fatal(err)
	}
	if got := peerEntries(t, h, vx.Index); len(got) != 0 {
		t.Errorf("entries after SetPeers(nil): %q", got)
	}

	local := e.network(1)
	e.attach("taskb", attach(local, e.addr(1, 5)))
	if err := e.m.SetPeers(local.Id, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetPeers of a node-local network: %v, want ErrInvalid", err)
	}
}

// TestOverlayRestore: a restarted Manager adopts the VXLAN device and its
// entries as they are, replaces one a crash took, and removes an orphan.
func TestOverlayRestore(t *testing.T) {
	e := newOverlayEnv(t)
	h := rootHandle(t)
	n := overlayNet(identity.NewID(), e.subnet(0), 0)
	e.attach("taska", attach(n, e.addr(0, 5)))
	peer := ipOf(e.addr(0, 7))
	if err := e.m.SetPeers(n.Id, []Peer{{IP: net.ParseIP(peer), Node: net.ParseIP("192.0.2.20")}}); err != nil {
		t.Fatal(err)
	}
	before := e.vxlanOf(n)
	// An orphan: a VXLAN device of the prefix whose network has no
	// bridge.
	orphan := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: e.cfg.Prefix + "-vx-orph"}, VxlanId: 77, Port: DefaultVXLANPort, SrcAddr: underlay}
	if err := netlink.LinkAdd(orphan); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetAlias(orphan, bridgeAlias("gone")); err != nil {
		t.Fatal(err)
	}

	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Restore(); err != nil {
		t.Fatal(err)
	}
	after := e.vxlanOf(n)
	if after.Index != before.Index || m2.bridges[n.Id].vx != before.Name || m2.bridges[n.Id].vni != derivedVNI(n.Id) {
		t.Errorf("Restore did not adopt %s (index %d → %d, recorded %+v)", before.Name, before.Index, after.Index, m2.bridges[n.Id])
	}
	if got, want := peerEntries(t, h, after.Index), peerWant(peer, "192.0.2.20"); !slices.Equal(got, want) {
		t.Errorf("entries after Restore, before SetPeers:\n got %q\nwant %q", got, want)
	}
	if _, err := netlink.LinkByName(orphan.Name); !isLinkNotFound(err) {
		t.Errorf("orphaned VXLAN device left: %v", err)
	}
	if err := m2.SetPeers(n.Id, nil); err != nil {
		t.Fatal(err)
	}
	if got := peerEntries(t, h, after.Index); len(got) != 0 {
		t.Errorf("entries after the restored Manager's SetPeers(nil): %q", got)
	}

	// A crash took the device: Restore makes it again, from the VNI in
	// the bridge's alias.
	if err := deleteLink(after.Name); err != nil {
		t.Fatal(err)
	}
	m3, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m3.Restore(); err != nil {
		t.Fatal(err)
	}
	if again := e.vxlanOf(n); again.VxlanId != int(derivedVNI(n.Id)) || again.MasterIndex != m3.bridges[n.Id].index {
		t.Errorf("device made again: vni %d master %d", again.VxlanId, again.MasterIndex)
	}
	if err := m3.Detach("taska"); err != nil {
		t.Fatal(err)
	}
	if links, _ := m3.ownLinks(); len(links) != 0 {
		t.Errorf("%d links left after the last Detach", len(links))
	}
}
