package allocator

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// slash24 is an allocator with one automatic network "n" (10.0.0.0/24) and
// a service "web" on it, both allocated.
func slash24(t *testing.T, mode func(*typesv1.Service) *typesv1.Service) (*Allocator, *typesv1.Service) {
	t.Helper()
	n := mkNetwork("n", "st_default")
	s := mkService("s", "web", []string{"n"})
	if mode != nil {
		s = mode(s)
	}
	a := mustNew(t, []*typesv1.Network{n}, []*typesv1.Service{s}, nil)
	mustNetwork(t, a, n)
	mustService(t, a, s)
	return a, s
}

func TestTasksFillASlash24(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  func(*typesv1.Service) *typesv1.Service
		tasks int
	}{
		// 256 addresses: network, broadcast and gateway leave 253.
		{"vip", nil, 252},
		{"dnsrr", dnsrr, 253},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, s := slash24(t, tc.mode)
			vip := vipOn(s, "n")
			if (vip == "") != (tc.mode != nil) {
				t.Fatalf("VIP %q in mode %s", vip, tc.name)
			}
			if tc.mode == nil && vip != "10.0.0.2/24" {
				t.Fatalf("VIP %s, want the lowest free 10.0.0.2/24", vip)
			}
			seen := map[string]bool{}
			for i := range tc.tasks {
				tk := mkTask(fmt.Sprintf("t%03d", i), s, uint64(i+1))
				changed, err := a.AllocateTask(tk, s)
				if err != nil || !changed {
					t.Fatalf("task %d: %v, %v", i, changed, err)
				}
				addr := addrOn(tk, "n")
				p := netip.MustParsePrefix(addr)
				switch {
				case p.Bits() != 24 || !netip.MustParsePrefix("10.0.0.0/24").Contains(p.Addr()):
					t.Fatalf("task %d: %s is not in 10.0.0.0/24", i, addr)
				case p.Addr().As4()[3] == 0, p.Addr().As4()[3] == 255:
					t.Fatalf("task %d: network or broadcast address %s", i, addr)
				case addr == "10.0.0.1/24":
					t.Fatalf("task %d: got the gateway", i)
				case addr == vip:
					t.Fatalf("task %d: got the VIP", i)
				case seen[addr]:
					t.Fatalf("task %d: %s given twice", i, addr)
				}
				seen[addr] = true
			}
			full := mkTask("full", s, 999)
			changed, err := a.AllocateTask(full, s)
			wantErr(t, err, ErrExhausted, "could not find an available IP on network st_default")
			if changed || len(full.GetNetworks()) != 0 {
				t.Fatalf("failed task changed: %v", full.GetNetworks())
			}
		})
	}
}

func TestLowestFreeAddressFirst(t *testing.T) {
	a, s := slash24(t, nil)
	var tasks []*typesv1.Task
	for i := range 6 {
		tk := mkTask(fmt.Sprintf("t%d", i), s, uint64(i+1))
		mustTask(t, a, tk, s)
		if want := fmt.Sprintf("10.0.0.%d/24", i+3); addrOn(tk, "n") != want {
			t.Fatalf("task %d: %s, want %s", i, addrOn(tk, "n"), want)
		}
		tasks = append(tasks, tk)
	}
	end(tasks[4], typesv1.TaskState_TASK_STATE_FAILED)
	a.Release(tasks[4])
	end(tasks[1], typesv1.TaskState_TASK_STATE_COMPLETE)
	a.Release(tasks[1])
	// Gaps are filled lowest first, then the range continues after .8.
	next := []string{"10.0.0.4/24", "10.0.0.7/24", "10.0.0.9/24"}
	for i, want := range next {
		tk := mkTask(fmt.Sprintf("r%d", i), s, uint64(i+1))
		mustTask(t, a, tk, s)
		if addrOn(tk, "n") != want {
			t.Fatalf("replacement %d: %s, want %s", i, addrOn(tk, "n"), want)
		}
	}
}

func TestIPRangeLimitsTaskAddresses(t *testing.T) {
	n := mkNetwork("n", "st_default", &typesv1.IPAMConfig{Subnet: "10.5.0.0/24", Range: "10.5.0.128/30"})
	s := dnsrr(mkService("s", "web", []string{"n"}))
	a := mustNew(t, []*typesv1.Network{n}, []*typesv1.Service{s}, nil)
	mustNetwork(t, a, n)
	mustService(t, a, s)
	if _, gw, _ := ipam(n); gw != "10.5.0.1" {
		t.Fatalf("gateway %s: the default is the subnet's first host, even outside the range", gw)
	}
	var got []string
	for i := range 4 {
		tk := mkTask(fmt.Sprintf("t%d", i), s, uint64(i+1))
		mustTask(t, a, tk, s)
		got = append(got, addrOn(tk, "n"))
	}
	if want := []string{"10.5.0.128/24", "10.5.0.129/24", "10.5.0.130/24", "10.5.0.131/24"}; !slices.Equal(got, want) {
		t.Fatalf("addresses %v, want %v", got, want)
	}
	_, err := a.AllocateTask(mkTask("t4", s, 5), s)
	wantErr(t, err, ErrExhausted, "could not find an available IP on network st_default")
}

func TestTaskAttachments(t *testing.T) {
	front := mkNetwork("front", "st_front")
	back := mkNetwork("back", "st_back")
	s := mkService("s", "web", []string{"front"})
	s.Spec.Task.Networks[0].Aliases = []string{"www"}
	// The older place for networks is honoured too, after the task's.
	s.Spec.Networks = []*typesv1.NetworkAttachmentConfig{{Target: "back", Aliases: []string{"api"}}, {Target: "front", Aliases: []string{"w3"}}}
	s.Spec.Endpoint = &typesv1.EndpointSpec{Ports: []*typesv1.PortConfig{tcp(80, 0)}}
	a := mustNew(t, []*typesv1.Network{front, back}, nil, nil)
	mustNetwork(t, a, front)
	mustNetwork(t, a, back)
	mustService(t, a, s)
	if vipOn(s, "front") != "10.0.0.2/24" || vipOn(s, "back") != "10.0.1.2/24" {
		t.Fatalf("VIPs %v", s.GetEndpoint().GetVirtualIps())
	}

	tk := mkTask("t1", s, 1)
	changed, err := a.AllocateTask(tk, s)
	if err != nil || !changed {
		t.Fatalf("AllocateTask: %v, %v", changed, err)
	}
	want := []*typesv1.NetworkAttachment{
		{Network: attachmentCopy(front), Addresses: []string{"10.0.0.3/24"}, Aliases: []string{"www", "w3", "web"}},
		{Network: attachmentCopy(back), Addresses: []string{"10.0.1.3/24"}, Aliases: []string{"api", "web"}},
	}
	if !attachmentsEqual(tk.GetNetworks(), want) {
		t.Fatalf("attachments\n%v\nwant\n%v", tk.GetNetworks(), want)
	}
	if tk.GetNetworks()[0].GetNetwork().GetIpam() == nil {
		t.Fatal("the network copy lacks its allocation")
	}
	if !proto.Equal(tk.GetEndpoint(), s.GetEndpoint()) {
		t.Fatalf("task endpoint %v, want the service's %v", tk.GetEndpoint(), s.GetEndpoint())
	}

	// Allocated: again is a no-op, and so is the same task after a rebuild.
	if changed, err := a.AllocateTask(tk, s); changed || err != nil {
		t.Fatalf("again: %v, %v", changed, err)
	}
	b := mustNew(t, []*typesv1.Network{front, back}, []*typesv1.Service{s}, []*typesv1.Task{tk})
	if changed, err := b.AllocateTask(tk, s); changed || err != nil {
		t.Fatalf("after rebuild: %v, %v", changed, err)
	}
}

func TestTaskNetworkModes(t *testing.T) {
	for _, mode := range []string{"host", "none"} {
		t.Run(mode, func(t *testing.T) {
			a, s := slash24(t, nil)
			tk := mkTask("t", s, 1)
			tk.Spec.Container.NetworkMode = mode
			if _, err := a.AllocateTask(tk, s); err != nil {
				t.Fatal(err)
			}
			if len(tk.GetNetworks()) != 0 {
				t.Fatalf("attachments in network mode %s: %v", mode, tk.GetNetworks())
			}
			// The address nobody took is still the first one.
			next := mkTask("u", s, 2)
			mustTask(t, a, next, s)
			if addrOn(next, "n") != "10.0.0.3/24" {
				t.Fatalf("next: %s", addrOn(next, "n"))
			}
		})
	}
}

func TestTaskErrors(t *testing.T) {
	t.Run("unknown network", func(t *testing.T) {
		a, s := slash24(t, nil)
		tk := mkTask("t", s, 1)
		tk.Spec.Networks = append(tk.Spec.Networks, &typesv1.NetworkAttachmentConfig{Target: "gone"})
		_, err := a.AllocateTask(tk, s)
		wantErr(t, err, ErrNotFound, "task t", "network gone not found")
		if len(tk.GetNetworks()) != 0 {
			t.Fatal("failed task got attachments")
		}
	})
	t.Run("network not allocated", func(t *testing.T) {
		late := mkNetwork("late", "st_late")
		a := mustNew(t, []*typesv1.Network{late}, nil, nil)
		s := mkService("s", "web", []string{"late"})
		_, err := a.AllocateService(s)
		wantErr(t, err, ErrNotAllocated, "service st_web", "network st_late is not allocated yet")
	})
	t.Run("service not allocated", func(t *testing.T) {
		n := mkNetwork("n", "st_default")
		a := mustNew(t, []*typesv1.Network{n}, nil, nil)
		mustNetwork(t, a, n)
		s := mkService("s", "web", []string{"n"})
		_, err := a.AllocateTask(mkTask("t", s, 1), s)
		wantErr(t, err, ErrNotAllocated, "service st_web is not allocated yet")
	})
	t.Run("service cannot be allocated", func(t *testing.T) {
		a, s := slash24(t, nil)
		s.Spec.Endpoint = &typesv1.EndpointSpec{Ports: []*typesv1.PortConfig{tcp(80, 8080)}}
		other := mkService("o", "other", nil, tcp(80, 8080))
		mustService(t, a, other)
		_, err := a.AllocateTask(mkTask("t", s, 1), s)
		wantErr(t, err, ErrNotAllocated, "port 8080 is already in use by service st_other")
	})
}

func TestStaticAddresses(t *testing.T) {
	a, s := slash24(t, nil)
	s.Spec.Task.Networks[0].Addresses = []string{"10.0.0.200"}
	t1 := mkTask("t1", s, 1)
	mustTask(t, a, t1, s)
	if addrOn(t1, "n") != "10.0.0.200/24" {
		t.Fatalf("static address: %s", addrOn(t1, "n"))
	}
	_, err := a.AllocateTask(mkTask("t2", s, 2), s)
	wantErr(t, err, ErrInUse, "10.0.0.200", "task t1")

	for addr, kind := range map[string]error{
		"10.0.0.1":   ErrInUse, // the gateway
		"10.0.0.2":   ErrInUse, // the VIP
		"10.0.0.255": ErrInvalid,
		"10.0.1.9":   ErrInvalid,
		"nonsense":   ErrInvalid,
	} {
		tk := mkTask("t-"+addr, s, 3)
		tk.Spec.Networks[0].Addresses = []string{addr}
		_, err := a.AllocateTask(tk, s)
		wantErr(t, err, kind)
	}
	// Dynamic allocation goes around the static address.
	for i := range 197 {
		mustTask(t, a, mkTask(fmt.Sprintf("d%d", i), dynamicOnly(s), uint64(10+i)), dynamicOnly(s))
	}
	d := mkTask("last", dynamicOnly(s), 300)
	mustTask(t, a, d, dynamicOnly(s))
	if addrOn(d, "n") != "10.0.0.201/24" {
		t.Fatalf("after the static address: %s", addrOn(d, "n"))
	}
}

// dynamicOnly is s without static addresses in its task template.
func dynamicOnly(s *typesv1.Service) *typesv1.Service {
	c := proto.CloneOf(s)
	for _, n := range c.Spec.Task.Networks {
		n.Addresses = nil
	}
	return c
}

func TestTerminalTasksAreLeftAlone(t *testing.T) {
	a, s := slash24(t, nil)
	tk := mkTask("t", s, 1)
	end(tk, typesv1.TaskState_TASK_STATE_SHUTDOWN)
	changed, err := a.AllocateTask(tk, s)
	if changed || err != nil || len(tk.GetNetworks()) != 0 {
		t.Fatalf("terminal task: %v, %v, %v", changed, err, tk.GetNetworks())
	}
}

func TestReleaseFreesOnlyWhatTheTaskHolds(t *testing.T) {
	a, s := slash24(t, nil)
	old := mkTask("old", s, 1)
	mustTask(t, a, old, s)
	end(old, typesv1.TaskState_TASK_STATE_FAILED)
	a.Release(old)
	repl := mkTask("repl", s, 1)
	mustTask(t, a, repl, s)
	if addrOn(repl, "n") != addrOn(old, "n") {
		t.Fatalf("replacement %s, want the freed %s", addrOn(repl, "n"), addrOn(old, "n"))
	}
	// The old record still lists the address; releasing it again (a
	// caller that releases every terminal task on every pass) must not
	// take it from the replacement.
	a.Release(old)
	next := mkTask("next", s, 2)
	mustTask(t, a, next, s)
	if addrOn(next, "n") == addrOn(repl, "n") {
		t.Fatalf("address %s given twice", addrOn(next, "n"))
	}
}

func TestServiceUnknownToTheAllocatorKeepsItsVIP(t *testing.T) {
	a, s := slash24(t, nil)
	// A fresh allocator that was not given the service: the task must
	// still not get the service's VIP.
	b := mustNew(t, []*typesv1.Network{a.networks["n"].obj}, nil, nil)
	tk := mkTask("t", s, 1)
	mustTask(t, b, tk, s)
	if addrOn(tk, "n") == vipOn(s, "n") {
		t.Fatalf("task got the VIP %s", vipOn(s, "n"))
	}
}

func TestServiceOnUnknownNetwork(t *testing.T) {
	a := mustNew(t, nil, nil, nil)
	s := mkService("s", "web", []string{"nowhere"})
	changed, err := a.AllocateService(s)
	wantErr(t, err, ErrNotFound, "service st_web", "network nowhere not found")
	if changed || len(s.GetEndpoint().GetVirtualIps()) != 0 {
		t.Fatal("failed service changed")
	}
}
