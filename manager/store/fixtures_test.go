package store

import (
	"context"
	"testing"
	"time"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// t0 is the fixed clock of these tests.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func stackLabels(stack string) map[string]string {
	if stack == "" {
		return nil
	}
	return map[string]string{StackLabel: stack}
}

func mkService(id, name, stack string) *typesv1.Service {
	return &typesv1.Service{Id: id, Spec: &typesv1.ServiceSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: stackLabels(stack)},
		Task:        &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: "nginx:alpine"}},
		Mode:        &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: 3}},
	}}
}

func mkTask(id, serviceID, serviceName, stack, nodeID string, slot uint64) *typesv1.Task {
	return &typesv1.Task{
		Id: id, ServiceId: serviceID, NodeId: nodeID, Slot: slot,
		ServiceAnnotations: &typesv1.Annotations{Name: serviceName, Labels: stackLabels(stack)},
		DesiredState:       typesv1.TaskState_TASK_STATE_RUNNING,
		Status:             &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_NEW},
	}
}

func mkNetwork(id, name, stack string) *typesv1.Network {
	return &typesv1.Network{Id: id, Spec: &typesv1.NetworkSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: stackLabels(stack)}, Driver: "overlay",
	}}
}

func mkNode(id, hostname string) *typesv1.Node {
	return &typesv1.Node{Id: id, Description: &typesv1.NodeDescription{Hostname: hostname},
		Status: &typesv1.NodeStatus{State: typesv1.NodeState_NODE_STATE_READY}}
}

func mkCluster(id string) *typesv1.Cluster {
	return &typesv1.Cluster{Id: id, Spec: &typesv1.ClusterSpec{
		Annotations: &typesv1.Annotations{Name: "default"}, TaskHistoryLimit: 5,
	}}
}

func mkSecret(id, name, stack string) *typesv1.Secret {
	return &typesv1.Secret{Id: id, Spec: &typesv1.SecretSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: stackLabels(stack)}, Data: []byte("s3cr3t"),
	}}
}

func mkConfig(id, name, stack string) *typesv1.Config {
	return &typesv1.Config{Id: id, Spec: &typesv1.ConfigSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: stackLabels(stack)}, Data: []byte("cfg"),
	}}
}

// harness is a store with a local proposer and the fixed clock.
type harness struct {
	t *testing.T
	s *Store
	p Proposer
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	s := New()
	s.Now = func() time.Time { return t0 }
	return &harness{t: t, s: s, p: NewLocalProposer(s)}
}

// commit proposes the batch build makes and fails the test on error.
func (h *harness) commit(build func(b *Batch)) uint64 {
	h.t.Helper()
	idx, err := h.try(build)
	if err != nil {
		h.t.Fatalf("commit: %v", err)
	}
	return idx
}

func (h *harness) try(build func(b *Batch)) (uint64, error) {
	b := h.s.NewBatch()
	build(b)
	return h.p.Propose(context.Background(), b.Proto())
}

func (h *harness) task(id string) *typesv1.Task {
	var t *typesv1.Task
	h.s.View(func(tx ReadTx) { t = GetTask(tx, id) })
	return t
}

func (h *harness) service(id string) *typesv1.Service {
	var s *typesv1.Service
	h.s.View(func(tx ReadTx) { s = GetService(tx, id) })
	return s
}

func taskIDs(t *testing.T, s *Store, by By) []string {
	t.Helper()
	var ids []string
	s.View(func(tx ReadTx) {
		tasks, err := FindTasks(tx, by)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range tasks {
			ids = append(ids, x.GetId())
		}
	})
	return ids
}

// kinds returns the kinds of a batch's actions, for messages.
func kinds(b *storev1.Batch) []storev1.StoreAction_Kind {
	var out []storev1.StoreAction_Kind
	for _, a := range b.GetActions() {
		out = append(out, a.GetKind())
	}
	return out
}
