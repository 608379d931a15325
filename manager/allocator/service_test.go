package allocator

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestPublishedPorts(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	web := mkService("w", "web", nil, tcp(80, 0), tcp(443, 0), udp(53, 0), hostPort(9000, 0), hostPort(9001, 9001))
	changed, err := a.AllocateService(web)
	if err != nil || !changed {
		t.Fatalf("AllocateService: %v, %v", changed, err)
	}
	// TCP and UDP are separate spaces; host-mode ports are bound per node
	// and stay as the spec says.
	if got, want := published(web), []uint32{30000, 30001, 30000, 0, 9001}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	// The spec is untouched: 0 still means "allocate one".
	if web.GetSpec().GetEndpoint().GetPorts()[0].GetPublishedPort() != 0 {
		t.Fatal("spec changed")
	}

	// An explicit port inside the dynamic range is skipped by dynamic
	// allocation, also when both are in one service.
	api := mkService("a", "api", nil, tcp(8080, 0), tcp(80, 30002))
	mustService(t, a, api)
	if got, want := published(api), []uint32{30003, 30002}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}

	// Explicit ports are unique cluster-wide.
	db := mkService("d", "db", nil, tcp(5432, 4000))
	mustService(t, a, db)
	clash := mkService("c", "clash", nil, tcp(80, 4000))
	_, err = a.AllocateService(clash)
	wantErr(t, err, ErrInUse, "port 4000 is already in use by service st_db")
	udpClash := mkService("u", "udpclash", nil, udp(53, 30000))
	_, err = a.AllocateService(udpClash)
	wantErr(t, err, ErrInUse, "port 30000/udp is already in use by service st_web")
	twice := mkService("t", "twice", nil, tcp(80, 5000), tcp(81, 5000))
	_, err = a.AllocateService(twice)
	wantErr(t, err, ErrInvalid, "publishes port 5000 twice")

	// Removing the holder frees the port.
	a.ReleaseService(db)
	mustService(t, a, clash)
}

func TestAllocateServiceIsIdempotent(t *testing.T) {
	n := mkNetwork("n", "st_default")
	s := mkService("s", "web", []string{"n"}, tcp(80, 0))
	a := mustNew(t, []*typesv1.Network{n}, []*typesv1.Service{s}, nil)
	mustNetwork(t, a, n)
	mustService(t, a, s)
	before := proto.CloneOf(s)
	state := a.state()
	for range 2 {
		if changed, err := a.AllocateService(s); changed || err != nil {
			t.Fatalf("again: %v, %v", changed, err)
		}
	}
	if !proto.Equal(s, before) || !slices.Equal(a.state(), state) {
		t.Fatal("a second allocation changed something")
	}
	// A service with nothing to allocate is not "changed" either.
	bare := &typesv1.Service{Id: "b", Spec: &typesv1.ServiceSpec{Annotations: &typesv1.Annotations{Name: "bare"}}}
	if changed, err := a.AllocateService(bare); changed || err != nil || bare.Endpoint != nil {
		t.Fatalf("bare service: %v, %v, %v", changed, err, bare.Endpoint)
	}
}

func TestSpecChangeKeepsWhatStillFits(t *testing.T) {
	front, back := mkNetwork("front", "st_front"), mkNetwork("back", "st_back")
	s := mkService("s", "web", []string{"front", "back"}, tcp(80, 0), tcp(81, 0))
	a := mustNew(t, []*typesv1.Network{front, back}, nil, nil)
	mustNetwork(t, a, front)
	mustNetwork(t, a, back)
	mustService(t, a, s)
	other := mkService("o", "other", []string{"front"}, tcp(80, 0))
	mustService(t, a, other)
	if vipOn(s, "front") != "10.0.0.2/24" || vipOn(other, "front") != "10.0.0.3/24" {
		t.Fatalf("VIPs %v %v", s.Endpoint.VirtualIps, other.Endpoint.VirtualIps)
	}

	// A new spec (as an update writes it, keeping the allocated endpoint):
	// port 81 dropped, 8080 added, network back left.
	s.Spec.Task.Networks = s.Spec.Task.Networks[:1]
	s.Spec.Endpoint.Ports = []*typesv1.PortConfig{tcp(80, 0), tcp(8080, 0)}
	changed, err := a.AllocateService(s)
	if err != nil || !changed {
		t.Fatalf("update: %v, %v", changed, err)
	}
	if got, want := published(s), []uint32{30000, 30001}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v (80 keeps its port, 8080 takes the one 81 freed)", got, want)
	}
	// A new port listed before one that keeps its number does not take it.
	s.Spec.Endpoint.Ports = []*typesv1.PortConfig{tcp(9090, 0), tcp(80, 0)}
	mustService(t, a, s)
	if got, want := published(s), []uint32{30001, 30000}; !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if vipOn(s, "front") != "10.0.0.2/24" || vipOn(s, "back") != "" {
		t.Fatalf("VIPs %v", s.Endpoint.VirtualIps)
	}
	// The VIP on back is free again.
	third := mkService("x", "third", []string{"back"})
	mustService(t, a, third)
	if vipOn(third, "back") != "10.0.1.2/24" {
		t.Fatalf("VIP on back %s, want the freed 10.0.1.2/24", vipOn(third, "back"))
	}

	// Switching to DNSRR gives the VIP back.
	dnsrr(s)
	mustService(t, a, s)
	if len(s.Endpoint.VirtualIps) != 0 {
		t.Fatalf("VIPs in DNSRR mode: %v", s.Endpoint.VirtualIps)
	}
	fourth := mkService("y", "fourth", []string{"front"})
	mustService(t, a, fourth)
	if vipOn(fourth, "front") != "10.0.0.2/24" {
		t.Fatalf("VIP %s, want the freed 10.0.0.2/24", vipOn(fourth, "front"))
	}
}

// The control API checks explicit ports against other services' specs,
// where a dynamic port shows as 0. A service stored with an explicit port
// some other service got dynamically must not stop the rebuild; its own
// allocation reports the conflict.
func TestExplicitPortClashingWithDynamicOne(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	dyn := mkService("a", "dyn", nil, tcp(80, 0))
	mustService(t, a, dyn)
	late := mkService("b", "late", nil, tcp(80, 30000))

	for _, order := range [][]*typesv1.Service{{dyn, late}, {late, dyn}} {
		b, err := New(nil, order, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		_, err = b.AllocateService(late)
		wantErr(t, err, ErrInUse, "port 30000 is already in use by service st_dyn")
		if changed, err := b.AllocateService(dyn); changed || err != nil {
			t.Fatalf("the holder after rebuild: %v, %v", changed, err)
		}
	}
}

func TestDynamicPortRangeExhausted(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	for i := range DynamicPortEnd - DynamicPortStart + 1 {
		mustService(t, a, mkService(fmt.Sprintf("s%d", i), fmt.Sprintf("s%d", i), nil, tcp(80, 0)))
	}
	_, err := a.AllocateService(mkService("last", "last", nil, tcp(80, 0)))
	wantErr(t, err, ErrExhausted, "could not find an available port in 30000-32767 for service st_last")
	// UDP is a separate space.
	mustService(t, a, mkService("u", "u", nil, udp(53, 0)))
}

func TestServiceVIPExhausted(t *testing.T) {
	n := mkNetwork("n", "st_tiny", subnet("10.9.0.0/30"))
	a := mustNew(t, []*typesv1.Network{n}, nil, nil)
	mustNetwork(t, a, n)
	one := mkService("one", "one", []string{"n"})
	mustService(t, a, one)
	if vipOn(one, "n") != "10.9.0.2/30" {
		t.Fatalf("VIP %s", vipOn(one, "n"))
	}
	two := mkService("two", "two", []string{"n"}, tcp(80, 0))
	changed, err := a.AllocateService(two)
	wantErr(t, err, ErrExhausted, "could not find an available IP on network st_tiny")
	if changed || published(two)[0] != 0 {
		t.Fatal("a failed allocation changed the service")
	}
	// Nor did it keep the port it would have taken.
	three := mkService("three", "three", nil, tcp(80, 0))
	mustService(t, a, three)
	if published(three)[0] != DynamicPortStart {
		t.Fatalf("port %d, want %d", published(three)[0], DynamicPortStart)
	}
}
