package allocator

import (
	"errors"
	"fmt"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// fakeStore holds what the store would list: objects are removed when
// deleted, tasks stay (as history) once they have ended.
type fakeStore struct {
	nets  []*typesv1.Network
	svcs  []*typesv1.Service
	tasks []*typesv1.Task
}

// leakRun deploys and removes a published 50-replica stack on a /24 ten
// times, the scenario of moby/moby#37338 where Docker ran out of
// addresses. It returns the first error, and how many rounds converged.
type leakRun struct {
	rebuild       bool // New from the store every round, as after a restart
	removeNetwork bool // `stack rm` removes the stack's network too
	leaky         bool // forget to release: the test must catch this
}

const (
	leakRounds   = 10
	leakReplicas = 50
)

func (r leakRun) run(t *testing.T) (int, error) {
	t.Helper()
	st := &fakeStore{}
	var a *Allocator
	var nw *typesv1.Network
	for round := 1; round <= leakRounds; round++ {
		if r.rebuild || a == nil {
			var err error
			if a, err = New(st.nets, st.svcs, st.tasks); err != nil {
				return round - 1, err
			}
		}
		if nw == nil {
			nw = mkNetwork(fmt.Sprintf("net%d", round), "st_default", subnet("10.0.9.0/24"))
			if _, err := a.AllocateNetwork(nw); err != nil {
				return round - 1, err
			}
			st.nets = append(st.nets, nw)
		}

		svc := mkService(fmt.Sprintf("svc%d", round), "web", []string{nw.GetId()}, tcp(80, 0))
		if _, err := a.AllocateService(svc); err != nil {
			return round - 1, err
		}
		if got := published(svc)[0]; got != DynamicPortStart && !r.leaky {
			t.Errorf("round %d: published port %d, want %d again", round, got, DynamicPortStart)
		}
		st.svcs = append(st.svcs, svc)
		seen := map[string]bool{vipOn(svc, nw.GetId()): true}
		var tasks []*typesv1.Task
		for slot := 1; slot <= leakReplicas; slot++ {
			tk := mkTask(fmt.Sprintf("r%02d-t%02d", round, slot), svc, uint64(slot))
			if _, err := a.AllocateTask(tk, svc); err != nil {
				return round - 1, fmt.Errorf("round %d, slot %d: %w", round, slot, err)
			}
			if addr := addrOn(tk, nw.GetId()); seen[addr] {
				t.Fatalf("round %d: %s given twice", round, addr)
			}
			seen[addrOn(tk, nw.GetId())] = true
			tk.Status = &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_RUNNING}
			tasks = append(tasks, tk)
		}
		st.tasks = append(st.tasks, tasks...)

		// `stack rm`: the service goes, its tasks end (and stay as
		// history with their addresses in their records).
		st.svcs = st.svcs[:0]
		for _, tk := range tasks {
			end(tk, typesv1.TaskState_TASK_STATE_SHUTDOWN)
			if !r.leaky {
				a.Release(tk)
			}
		}
		if !r.leaky {
			a.ReleaseService(svc)
		}
		if r.removeNetwork {
			st.nets = st.nets[:0]
			if !r.leaky {
				a.ReleaseNetwork(nw)
			}
			nw = nil
		}
	}
	return leakRounds, nil
}

func TestDeployRemoveTenTimesDoesNotLeak(t *testing.T) {
	for _, r := range []leakRun{
		{rebuild: true},
		{rebuild: true, removeNetwork: true},
		{rebuild: false},
		{rebuild: false, removeNetwork: true},
	} {
		t.Run(fmt.Sprintf("rebuild=%v,removeNetwork=%v", r.rebuild, r.removeNetwork), func(t *testing.T) {
			rounds, err := r.run(t)
			if err != nil || rounds != leakRounds {
				t.Fatalf("converged %d rounds of %d: %v", rounds, leakRounds, err)
			}
		})
	}
}

// TestLeakIsCaught shows the test above would see a leak: 51 addresses a
// round fill a /24's 253 in the fifth.
func TestLeakIsCaught(t *testing.T) {
	rounds, err := leakRun{leaky: true}.run(t)
	if !errors.Is(err, ErrExhausted) || rounds != 4 {
		t.Fatalf("leaky run: %d rounds, %v; want exhaustion in round 5", rounds, err)
	}
}
