package deploy

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/internal/identity"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestIsTerminal(t *testing.T) {
	for st := range typesv1.TaskState_name {
		s := typesv1.TaskState(st)
		want := s >= COMPLETE
		if got := IsTerminal(s); got != want {
			t.Errorf("IsTerminal(%v) = %v", s, got)
		}
	}
}

func TestTaskName(t *testing.T) {
	for _, c := range []struct {
		svc  *typesv1.Service
		task *typesv1.Task
		want string
	}{
		{svc(3), task(2, RUNNING, RUNNING), "web.2"},
		{svc(0, global()), gtask("abc", RUNNING, RUNNING), "web.abc"},
		{nil, task(2, RUNNING, RUNNING), "web.2"},
		{nil, gtask("abc", RUNNING, RUNNING), "web.abc"},
	} {
		if got := TaskName(c.svc, c.task); got != c.want {
			t.Errorf("TaskName = %q, want %q", got, c.want)
		}
	}
}

func TestNewTask(t *testing.T) {
	s := svc(3, func(s *typesv1.Service) {
		s.Spec.Endpoint = &typesv1.EndpointSpec{Ports: []*typesv1.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	})
	got := NewTask(s, 2, "", t0, "id1")
	if got.GetId() != "id1" || got.GetServiceId() != "svc" || got.GetSlot() != 2 || got.GetNodeId() != "" ||
		got.GetSpecVersion() != 2 || got.GetDesiredState() != RUNNING {
		t.Errorf("identity fields: %v", got)
	}
	if st := got.GetStatus(); st.GetState() != NEW || st.GetMessage() != "created" || !st.GetTimestamp().AsTime().Equal(t0) {
		t.Errorf("status %v", st)
	}
	if got.GetAnnotations().GetName() != "web.2" || got.GetAnnotations().GetLabels()["com.docker.stack.namespace"] != "app" {
		t.Errorf("annotations %v", got.GetAnnotations())
	}
	if !proto.Equal(got.GetServiceAnnotations(), s.GetSpec().GetAnnotations()) ||
		!proto.Equal(got.GetSpec(), s.GetSpec().GetTask()) ||
		!proto.Equal(got.GetEndpoint().GetSpec(), s.GetSpec().GetEndpoint()) {
		t.Errorf("copied fields differ: %v", got)
	}
	// Copies, not aliases: the service may change after.
	s.Spec.Task.Container.Image = "other"
	s.Spec.Annotations.Labels["x"] = "y"
	if got.GetSpec().GetContainer().GetImage() != newImage || len(got.GetAnnotations().GetLabels()) != 1 ||
		len(got.GetServiceAnnotations().GetLabels()) != 1 {
		t.Errorf("new task aliases the service")
	}

	g := NewTask(svc(0, global()), 0, "node7", t0, "id2")
	if g.GetAnnotations().GetName() != "web.node7" || g.GetNodeId() != "node7" || g.GetSlot() != 0 {
		t.Errorf("global task %v", g)
	}
}

func TestResultEmpty(t *testing.T) {
	if !(Result{Requeue: second}).Empty() {
		t.Error("a result that only waits is not empty")
	}
	if (Result{Delete: []string{"x"}}).Empty() {
		t.Error("a result with a delete is empty")
	}
}

func TestDefaultIDs(t *testing.T) {
	r := Reconcile(Input{Service: svc(2), Now: t0})
	if len(r.Create) != 2 {
		t.Fatalf("%d tasks created", len(r.Create))
	}
	for _, c := range r.Create {
		if len(c.GetId()) != identity.Len {
			t.Errorf("id %q is not an identity id", c.GetId())
		}
	}
	if r.Create[0].GetId() == r.Create[1].GetId() {
		t.Error("ids repeat")
	}
}

// benchWorld is a service of 150 replicas, each slot with a running task
// and a full history, every task of the given image.
func benchWorld(img string) *world {
	w := &world{svc: svc(150), now: t0}
	for s := uint64(1); s <= 150; s++ {
		w.tasks = append(w.tasks, task(s, RUNNING, RUNNING, id(fmt.Sprintf("s%d", s)), image(img)))
		for _, h := range history(s, DefaultHistoryLimit) {
			h.Spec = spec(img)
			w.tasks = append(w.tasks, h)
		}
	}
	return w
}

func BenchmarkReconcile150(b *testing.B) {
	for _, c := range []struct{ name, image string }{
		{"steady", newImage},
		{"update-start", oldImage},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := benchWorld(c.image)
			in := w.input()
			in.NewID = func() string { return "x" }
			b.ReportAllocs()
			for b.Loop() {
				Reconcile(in)
			}
		})
	}
}
