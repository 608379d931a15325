package allocator

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// cluster allocates a mixed cluster with one allocator, as a leader would
// over several passes, and returns the allocator and what it stored.
func cluster(t *testing.T) (*Allocator, *fakeStore) {
	t.Helper()
	st := &fakeStore{nets: []*typesv1.Network{
		mkNetwork("auto", "st_default"),
		mkNetwork("ranged", "st_ranged", &typesv1.IPAMConfig{Subnet: "10.0.1.0/24", Range: "10.0.1.64/26", Gateway: "10.0.1.254"}),
		mkNetwork("two", "st_two", subnet("192.168.10.0/29"), subnet("192.168.20.0/24")),
		mkNetwork("pending", "st_pending", subnet("10.0.2.0/24")),
	}}
	a := mustNew(t, st.nets, nil, nil)
	for _, n := range st.nets[:3] {
		mustNetwork(t, a, n)
	}
	st.svcs = []*typesv1.Service{
		mkService("web", "web", []string{"auto", "ranged"}, tcp(80, 0), tcp(443, 8443), udp(53, 0)),
		dnsrr(mkService("db", "db", []string{"auto"}, hostPort(5432, 5432))),
		mkService("api", "api", []string{"two"}, tcp(8080, 0)),
	}
	for _, s := range st.svcs {
		mustService(t, a, s)
	}
	for i := range 12 {
		s := st.svcs[i%3]
		tk := mkTask(fmt.Sprintf("t%02d", i), s, uint64(i/3+1))
		mustTask(t, a, tk, s)
		st.tasks = append(st.tasks, tk)
	}
	// Some end; a removed service's tasks end with it.
	for _, i := range []int{1, 4, 6} {
		end(st.tasks[i], typesv1.TaskState_TASK_STATE_FAILED)
		a.Release(st.tasks[i])
	}
	// One task has failed but was never released: the rebuild must drop it
	// as well, so the live allocator is told here too.
	end(st.tasks[9], typesv1.TaskState_TASK_STATE_REJECTED)
	a.Release(st.tasks[9])
	return a, st
}

func TestRebuildGivesTheSameState(t *testing.T) {
	live, st := cluster(t)
	rebuilt := mustNew(t, st.nets, st.svcs, st.tasks)
	if got, want := rebuilt.state(), live.state(); !slices.Equal(got, want) {
		t.Fatalf("rebuilt state\n%v\nlive state\n%v", got, want)
	}

	// Nothing stored changes on a second look.
	for _, n := range st.nets[:3] {
		if changed, err := rebuilt.AllocateNetwork(n); changed || err != nil {
			t.Fatalf("network %s: %v, %v", n.GetId(), changed, err)
		}
	}
	for _, s := range st.svcs {
		if changed, err := rebuilt.AllocateService(s); changed || err != nil {
			t.Fatalf("service %s: %v, %v", s.GetId(), changed, err)
		}
	}
	for _, tk := range st.tasks {
		svc := st.svcs[slices.IndexFunc(st.svcs, func(s *typesv1.Service) bool { return s.GetId() == tk.GetServiceId() })]
		if changed, err := rebuilt.AllocateTask(tk, svc); changed || err != nil {
			t.Fatalf("task %s: %v, %v", tk.GetId(), changed, err)
		}
	}

	// And both hand out the same next things, none of them in use.
	for _, a := range []*Allocator{live, rebuilt} {
		pending := proto.CloneOf(st.nets[3])
		mustNetwork(t, a, pending)
		if sub, _, _ := ipam(pending); sub != "10.0.2.0/24" {
			t.Fatalf("pending network got %s", sub)
		}
		auto := mkNetwork("auto2", "st_more")
		mustNetwork(t, a, auto)
		if sub, _, _ := ipam(auto); sub != "10.0.3.0/24" {
			t.Fatalf("next automatic subnet %s", sub)
		}
		svc := mkService("new", "new", []string{"auto", "ranged", "two"}, tcp(1, 0), udp(2, 0))
		mustService(t, a, svc)
		tk := mkTask("new1", svc, 1)
		mustTask(t, a, tk, svc)
		got := []string{
			fmt.Sprint(published(svc)),
			vipOn(svc, "auto"), vipOn(svc, "ranged"), vipOn(svc, "two"),
			addrOn(tk, "auto"), addrOn(tk, "ranged"), addrOn(tk, "two"),
		}
		// auto has the web VIP .2 and tasks .3-.10, of which .4, .6, .7
		// and .9 ended; ranged allocates from .64 up (.64 the web VIP, .67
		// and .68 ended); two's first pool (.2-.6) is full, so its second
		// one serves. TCP 30000-30001 and UDP 30000 are held.
		want := []string{
			"[30002 30001]",
			"10.0.0.4/24", "10.0.1.67/24", "192.168.20.2/24",
			"10.0.0.6/24", "10.0.1.68/24", "192.168.20.3/24",
		}
		if !slices.Equal(got, want) {
			t.Fatalf("next allocations %v, want %v", got, want)
		}
		for _, s := range st.svcs {
			for _, v := range s.GetEndpoint().GetVirtualIps() {
				if slices.Contains(got, v.GetAddr()) {
					t.Fatalf("%s is the VIP of %s", v.GetAddr(), s.GetId())
				}
			}
		}
		for _, old := range st.tasks {
			if !Live(old) {
				continue
			}
			for _, att := range old.GetNetworks() {
				if slices.Contains(got, att.GetAddresses()[0]) {
					t.Fatalf("%s is held by %s", att.GetAddresses()[0], old.GetId())
				}
			}
		}
	}
	if got, want := rebuilt.state(), live.state(); !slices.Equal(got, want) {
		t.Fatalf("after the same allocations\n%v\n%v", got, want)
	}
}

func TestNewRefusesDoubleClaims(t *testing.T) {
	_, st := cluster(t)
	t.Run("two live tasks", func(t *testing.T) {
		dup := proto.CloneOf(st.tasks[0])
		dup.Id = "dup"
		_, err := New(st.nets, st.svcs, append(slices.Clone(st.tasks), dup))
		wantErr(t, err, ErrInUse, "task t00", "task dup")
	})
	t.Run("task on a VIP", func(t *testing.T) {
		dup := proto.CloneOf(st.tasks[0])
		dup.Id = "dup"
		dup.Networks[0].Addresses = []string{vipOn(st.svcs[0], "auto")}
		_, err := New(st.nets, st.svcs, append(slices.Clone(st.tasks), dup))
		wantErr(t, err, ErrInUse, "virtual IP of service st_web", "task dup")
	})
	t.Run("a terminal task's old address is free", func(t *testing.T) {
		dup := proto.CloneOf(st.tasks[0])
		dup.Id = "dup"
		end(dup, typesv1.TaskState_TASK_STATE_COMPLETE)
		mustNew(t, st.nets, st.svcs, append(slices.Clone(st.tasks), dup))
	})
	t.Run("dynamic port twice", func(t *testing.T) {
		dup := proto.CloneOf(st.svcs[0])
		dup.Id = "dup"
		dup.Endpoint.VirtualIps = nil
		_, err := New(st.nets, append(slices.Clone(st.svcs), dup), nil)
		wantErr(t, err, ErrInUse, "port 30000", "st_web")
	})
	t.Run("address on the gateway", func(t *testing.T) {
		dup := proto.CloneOf(st.tasks[0])
		dup.Id = "dup"
		dup.Networks[0].Addresses = []string{"10.0.0.1/24"}
		_, err := New(st.nets, st.svcs, []*typesv1.Task{dup})
		wantErr(t, err, ErrInUse, "the gateway")
	})
	t.Run("attachment to a removed network is ignored", func(t *testing.T) {
		mustNew(t, st.nets[1:], nil, st.tasks)
	})
}

// TestDeterministic allocates the same cluster twice from scratch: every
// stored object comes out the same.
func TestDeterministic(t *testing.T) {
	_, x := cluster(t)
	_, y := cluster(t)
	for i := range x.nets {
		if !proto.Equal(x.nets[i], y.nets[i]) {
			t.Fatalf("network %d differs", i)
		}
	}
	for i := range x.svcs {
		if !proto.Equal(x.svcs[i], y.svcs[i]) {
			t.Fatalf("service %d differs", i)
		}
	}
	for i := range x.tasks {
		if !proto.Equal(x.tasks[i], y.tasks[i]) {
			t.Fatalf("task %d differs", i)
		}
	}
}
