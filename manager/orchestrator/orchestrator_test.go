package orchestrator

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

type cluster struct {
	t     *testing.T
	store *store.Store
	prop  store.Proposer
}

// newCluster runs the orchestrator and the scheduler over a local store
// with one ready node.
func newCluster(t *testing.T, memory int64) *cluster {
	s := store.New()
	c := &cluster{t: t, store: s, prop: store.NewLocalProposer(s)}
	b := s.NewBatch()
	b.CreateNode(&typesv1.Node{
		Id:          "node1",
		Spec:        &typesv1.NodeSpec{},
		Description: &typesv1.NodeDescription{Hostname: "one", Resources: &typesv1.Resources{NanoCpus: 2e9, MemoryBytes: memory}},
		Status:      &typesv1.NodeStatus{State: typesv1.NodeState_NODE_STATE_READY},
	})
	c.propose(b)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { (&Orchestrator{Store: s, Prop: c.prop}).Run(ctx); done <- struct{}{} }()
	go func() { (&Scheduler{Store: s, Prop: c.prop}).Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return c
}

func (c *cluster) propose(b *store.Batch) {
	c.t.Helper()
	if _, err := c.prop.Propose(context.Background(), b.Proto()); err != nil {
		c.t.Fatal(err)
	}
}

// agent plays the node's agent once: every assigned task it should run
// becomes RUNNING, every task told to stop becomes SHUTDOWN.
func (c *cluster) agent() {
	b := c.store.NewBatch()
	c.store.View(func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByNodeID("node1"))
		for _, t := range tasks {
			st := t.GetStatus().GetState()
			switch {
			case t.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING && st >= typesv1.TaskState_TASK_STATE_ASSIGNED && st < typesv1.TaskState_TASK_STATE_RUNNING:
				t.Status = &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_RUNNING, Timestamp: timestamppb.Now()}
				b.UpdateTask(t)
			case t.GetDesiredState() > typesv1.TaskState_TASK_STATE_RUNNING && st <= typesv1.TaskState_TASK_STATE_RUNNING && st >= typesv1.TaskState_TASK_STATE_ASSIGNED:
				t.Status = &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_SHUTDOWN, Timestamp: timestamppb.Now()}
				b.UpdateTask(t)
			}
		}
	})
	if b.Len() > 0 {
		c.propose(b)
	}
}

func (c *cluster) counts(svc string) (running, pending int, reason string) {
	c.store.View(func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByServiceID(svc))
		for _, t := range tasks {
			if t.GetDesiredState() != typesv1.TaskState_TASK_STATE_RUNNING {
				continue
			}
			switch t.GetStatus().GetState() {
			case typesv1.TaskState_TASK_STATE_RUNNING:
				running++
			case typesv1.TaskState_TASK_STATE_PENDING:
				pending++
				reason = t.GetStatus().GetErr()
			}
		}
	})
	return
}

// until plays the agent and polls until cond holds.
func (c *cluster) until(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		c.agent()
		time.Sleep(5 * time.Millisecond)
	}
}

func service(id string, replicas uint64, memReserve int64) *typesv1.Service {
	return &typesv1.Service{
		Id: id,
		Spec: &typesv1.ServiceSpec{
			Annotations: &typesv1.Annotations{Name: "s_" + id},
			Task: &typesv1.TaskSpec{
				Container: &typesv1.ContainerSpec{Image: "helper"},
				Resources: &typesv1.ResourceRequirements{Reservations: &typesv1.Resources{MemoryBytes: memReserve}},
				Restart:   &typesv1.RestartPolicy{Delay: durationpb.New(0)},
			},
			Mode: &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: replicas}},
		},
		SpecVersion: 1,
	}
}

func TestDeployScaleRemove(t *testing.T) {
	c := newCluster(t, 1<<30)
	b := c.store.NewBatch()
	b.CreateService(service("web", 5, 0))
	c.propose(b)
	c.until("5 tasks running", func() bool { r, _, _ := c.counts("web"); return r == 5 })

	var svc *typesv1.Service
	c.store.View(func(tx store.ReadTx) { svc = store.GetService(tx, "web") })
	svc.Spec.Mode = &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: 2}}
	b = c.store.NewBatch()
	b.UpdateService(svc)
	c.propose(b)
	c.until("2 tasks running", func() bool { r, _, _ := c.counts("web"); return r == 2 })
	c.store.View(func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
		for _, task := range tasks {
			if task.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING && task.GetSlot() > 2 {
				t.Errorf("slot %d still wanted after scaling to 2", task.GetSlot())
			}
		}
	})

	c.store.View(func(tx store.ReadTx) { svc = store.GetService(tx, "web") })
	b = c.store.NewBatch()
	b.DeleteService(svc)
	c.propose(b)
	c.until("no task left running", func() bool {
		left := 0
		c.store.View(func(tx store.ReadTx) {
			tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
			for _, t := range tasks {
				if t.GetStatus().GetState() <= typesv1.TaskState_TASK_STATE_RUNNING {
					left++
				}
			}
		})
		return left == 0
	})
}

func TestUnschedulableTaskSaysWhy(t *testing.T) {
	c := newCluster(t, 1<<30)
	b := c.store.NewBatch()
	b.CreateService(service("big", 3, 400<<20))
	c.propose(b)
	var reason string
	c.until("2 running, 1 pending", func() bool {
		r, p, why := c.counts("big")
		reason = why
		return r == 2 && p == 1
	})
	if want := "no suitable node (insufficient memory on 1 node)"; reason != want {
		t.Errorf("pending reason %q, want %q", reason, want)
	}
}

func TestKilledTaskReplacedInItsSlot(t *testing.T) {
	c := newCluster(t, 1<<30)
	b := c.store.NewBatch()
	b.CreateService(service("web", 3, 0))
	c.propose(b)
	c.until("3 running", func() bool { r, _, _ := c.counts("web"); return r == 3 })
	b = c.store.NewBatch()
	var victim *typesv1.Task
	c.store.View(func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
		for _, t := range tasks {
			if t.GetSlot() == 2 {
				victim = t
			}
		}
	})
	victim.Status = &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_FAILED, Err: "task: non-zero exit (137)", Timestamp: timestamppb.Now(), Container: &typesv1.ContainerStatus{ExitCode: 137}}
	b.UpdateTask(victim)
	c.propose(b)
	c.until("slot 2 replaced", func() bool {
		ok := false
		c.store.View(func(tx store.ReadTx) {
			tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
			n := 0
			for _, t := range tasks {
				if t.GetSlot() == 2 {
					n++
					if t.GetId() != victim.GetId() && t.GetStatus().GetState() == typesv1.TaskState_TASK_STATE_RUNNING {
						ok = true
					}
				}
			}
			ok = ok && n == 2
		})
		return ok
	})
}

func TestRollingUpdateReplacesEveryTask(t *testing.T) {
	c := newCluster(t, 1<<30)
	svc := service("web", 3, 0)
	// No delay or monitor, so the test needs no clock of its own.
	svc.Spec.Update = &typesv1.UpdateConfig{Parallelism: 1, Delay: durationpb.New(0), Monitor: durationpb.New(0)}
	b := c.store.NewBatch()
	b.CreateService(svc)
	c.propose(b)
	c.until("3 running", func() bool { r, _, _ := c.counts("web"); return r == 3 })
	old := map[string]bool{}
	c.store.View(func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
		for _, task := range tasks {
			old[task.GetId()] = true
		}
		svc = store.GetService(tx, "web")
	})
	svc.Spec.Task.Container.Env = []string{"VERSION=2"}
	svc.SpecVersion++
	b = c.store.NewBatch()
	b.UpdateService(svc)
	c.propose(b)
	c.until("3 new tasks running with the new env", func() bool {
		n := 0
		c.store.View(func(tx store.ReadTx) {
			tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
			for _, task := range tasks {
				if !old[task.GetId()] && task.GetStatus().GetState() == typesv1.TaskState_TASK_STATE_RUNNING &&
					task.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING &&
					len(task.GetSpec().GetContainer().GetEnv()) == 1 {
					n++
				}
			}
		})
		return n == 3
	})
	c.store.View(func(tx store.ReadTx) {
		tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
		for _, task := range tasks {
			if old[task.GetId()] && task.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING {
				t.Errorf("old task %s (slot %d) still wanted", task.GetId(), task.GetSlot())
			}
		}
		if st := store.GetService(tx, "web").GetUpdateStatus().GetState(); st != typesv1.UpdateStatus_STATE_COMPLETED {
			t.Errorf("update status %v, want completed", st)
		}
	})
}

func TestTasksGetAddressesOnTheirNetwork(t *testing.T) {
	c := newCluster(t, 1<<30)
	svc := service("web", 3, 0)
	svc.Spec.Task.Networks = []*typesv1.NetworkAttachmentConfig{{Target: "net1"}}
	b := c.store.NewBatch()
	b.CreateNetwork(&typesv1.Network{Id: "net1", Spec: &typesv1.NetworkSpec{Annotations: &typesv1.Annotations{Name: "s_webnet"}, Driver: "overlay"}})
	b.CreateService(svc)
	c.propose(b)
	c.until("3 running", func() bool { r, _, _ := c.counts("web"); return r == 3 })
	c.store.View(func(tx store.ReadTx) {
		n := store.GetNetwork(tx, "net1")
		if len(n.GetIpam().GetConfigs()) == 0 || n.GetIpam().GetConfigs()[0].GetSubnet() == "" {
			t.Fatalf("network has no subnet: %v", n.GetIpam())
		}
		vips := store.GetService(tx, "web").GetEndpoint().GetVirtualIps()
		if len(vips) != 1 || vips[0].GetNetworkId() != "net1" {
			t.Errorf("service VIPs %v", vips)
		}
		seen := map[string]bool{}
		tasks, _ := store.FindTasks(tx, store.ByServiceID("web"))
		for _, task := range tasks {
			if len(task.GetNetworks()) != 1 || len(task.GetNetworks()[0].GetAddresses()) != 1 {
				t.Errorf("task %d attachments %v", task.GetSlot(), task.GetNetworks())
				continue
			}
			a := task.GetNetworks()[0].GetAddresses()[0]
			if seen[a] || a == vips[0].GetAddr() {
				t.Errorf("address %s given twice", a)
			}
			seen[a] = true
		}
	})
}
