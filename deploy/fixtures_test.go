package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// t0 is "now" in every test unless a case moves it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Short names for task states, as the tables read better with them.
const (
	NEW      = typesv1.TaskState_TASK_STATE_NEW
	PENDING  = typesv1.TaskState_TASK_STATE_PENDING
	ASSIGNED = typesv1.TaskState_TASK_STATE_ASSIGNED
	STARTING = typesv1.TaskState_TASK_STATE_STARTING
	RUNNING  = typesv1.TaskState_TASK_STATE_RUNNING
	COMPLETE = typesv1.TaskState_TASK_STATE_COMPLETE
	SHUTDOWN = typesv1.TaskState_TASK_STATE_SHUTDOWN
	FAILED   = typesv1.TaskState_TASK_STATE_FAILED
	REJECTED = typesv1.TaskState_TASK_STATE_REJECTED
	ORPHANED = typesv1.TaskState_TASK_STATE_ORPHANED
	REMOVE   = typesv1.TaskState_TASK_STATE_REMOVE
)

const (
	oldImage = "nginx:1"
	newImage = "nginx:2"
)

func spec(image string) *typesv1.TaskSpec {
	return &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: image}}
}

// ---------------------------------------------------------------- services

type svcOpt func(*typesv1.Service)

// svc is a replicated service "web" (id "svc") running newImage, with the
// previous spec running oldImage, and Docker's default policies.
func svc(replicas uint64, opts ...svcOpt) *typesv1.Service {
	s := &typesv1.Service{
		Id:          "svc",
		SpecVersion: 2,
		Spec: &typesv1.ServiceSpec{
			Annotations: &typesv1.Annotations{Name: "web", Labels: map[string]string{"com.docker.stack.namespace": "app"}},
			Task:        spec(newImage),
			Mode:        &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: replicas}},
		},
	}
	s.PreviousSpec = proto.Clone(s.Spec).(*typesv1.ServiceSpec)
	s.PreviousSpec.Task = spec(oldImage)
	for _, o := range opts {
		o(s)
	}
	return s
}

func global() svcOpt {
	return func(s *typesv1.Service) {
		s.Spec.Mode = &typesv1.ServiceSpec_Global{Global: &typesv1.GlobalService{}}
	}
}

// restart sets the restart policy; delay < 0 leaves the delay out (default).
func restart(c typesv1.RestartPolicy_Condition, delay time.Duration, maxAttempts uint64, window time.Duration) svcOpt {
	return func(s *typesv1.Service) {
		rp := &typesv1.RestartPolicy{Condition: c, MaxAttempts: maxAttempts}
		if delay >= 0 {
			rp.Delay = durationpb.New(delay)
		}
		if window > 0 {
			rp.Window = durationpb.New(window)
		}
		s.Spec.Task.Restart = rp
		// The previous spec differs only by its image, so that tasks
		// of either spec follow the same policy.
		if s.PreviousSpec != nil {
			s.PreviousSpec.Task.Restart = proto.Clone(rp).(*typesv1.RestartPolicy)
		}
	}
}

func noDelay() svcOpt { return restart(typesv1.RestartPolicy_CONDITION_ANY, 0, 0, 0) }

// update sets the update config of both specs.
func update(uc *typesv1.UpdateConfig) svcOpt {
	return func(s *typesv1.Service) {
		s.Spec.Update = uc
		if s.PreviousSpec != nil {
			s.PreviousSpec.Update = proto.Clone(uc).(*typesv1.UpdateConfig)
		}
	}
}

func rollbackConfig(uc *typesv1.UpdateConfig) svcOpt {
	return func(s *typesv1.Service) {
		s.Spec.Rollback = uc
		if s.PreviousSpec != nil {
			s.PreviousSpec.Rollback = proto.Clone(uc).(*typesv1.UpdateConfig)
		}
	}
}

func status(st typesv1.UpdateStatus_State, started time.Time) svcOpt {
	return func(s *typesv1.Service) {
		s.UpdateStatus = &typesv1.UpdateStatus{State: st, StartedAt: timestamppb.New(started)}
	}
}

func noPrevious() svcOpt { return func(s *typesv1.Service) { s.PreviousSpec = nil } }

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// ---------------------------------------------------------------- tasks

type taskOpt func(*typesv1.Task)

// task is a task of svc in a slot, of newImage, created and last changed an
// hour before t0, with id "s<slot>".
func task(slot uint64, st, desired typesv1.TaskState, opts ...taskOpt) *typesv1.Task {
	t := &typesv1.Task{
		Id:                 fmt.Sprintf("s%d", slot),
		Meta:               &typesv1.Meta{Version: 7, CreatedAt: timestamppb.New(t0.Add(-time.Hour))},
		Spec:               spec(newImage),
		SpecVersion:        2,
		ServiceId:          "svc",
		Slot:               slot,
		DesiredState:       desired,
		ServiceAnnotations: &typesv1.Annotations{Name: "web"},
		Status:             &typesv1.TaskStatus{State: st, Timestamp: timestamppb.New(t0.Add(-time.Hour))},
	}
	t.Annotations = &typesv1.Annotations{Name: fmt.Sprintf("web.%d", slot)}
	for _, o := range opts {
		o(t)
	}
	return t
}

// gtask is a task of a global service on a node, with id "g-<node>".
func gtask(node string, st, desired typesv1.TaskState, opts ...taskOpt) *typesv1.Task {
	t := task(0, st, desired, on(node), id("g-"+node))
	t.Annotations.Name = "web." + node
	for _, o := range opts {
		o(t)
	}
	return t
}

func id(s string) taskOpt    { return func(t *typesv1.Task) { t.Id = s } }
func on(node string) taskOpt { return func(t *typesv1.Task) { t.NodeId = node } }
func image(img string) taskOpt {
	return func(t *typesv1.Task) { t.Spec = spec(img); t.SpecVersion = 1 }
}
func old() taskOpt { return image(oldImage) }
func exit(code int32) taskOpt {
	return func(t *typesv1.Task) { t.Status.Container = &typesv1.ContainerStatus{ExitCode: code} }
}
func created(d time.Duration) taskOpt {
	return func(t *typesv1.Task) { t.Meta.CreatedAt = timestamppb.New(t0.Add(d)) }
}

// at sets when the status last changed (start of RUNNING, end of a
// terminal state), relative to t0.
func at(d time.Duration) taskOpt {
	return func(t *typesv1.Task) { t.Status.Timestamp = timestamppb.New(t0.Add(d)) }
}

// since is created and at together: a task that reached its state as soon
// as it was created.
func since(d time.Duration) taskOpt {
	return func(t *typesv1.Task) { created(d)(t); at(d)(t) }
}

// ---------------------------------------------------------------- nodes

func node(id string, st typesv1.NodeState, av typesv1.NodeAvailability) *typesv1.Node {
	return &typesv1.Node{
		Id:     id,
		Spec:   &typesv1.NodeSpec{Availability: av},
		Status: &typesv1.NodeStatus{State: st},
	}
}

func ready(id string) *typesv1.Node {
	return node(id, typesv1.NodeState_NODE_STATE_READY, typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE)
}

func down(id string) *typesv1.Node {
	return node(id, typesv1.NodeState_NODE_STATE_DOWN, typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE)
}

func availability(id string, av typesv1.NodeAvailability) *typesv1.Node {
	return node(id, typesv1.NodeState_NODE_STATE_READY, av)
}

// ---------------------------------------------------------------- the world

// world is an in-memory store for one service: the input of Reconcile and
// a tiny apply that plays the loop's part.
type world struct {
	svc      *typesv1.Service
	tasks    []*typesv1.Task
	nodes    []*typesv1.Node
	now      time.Time
	limit    int
	eligible func(*typesv1.Node, *typesv1.Task) bool
	ids      int
}

func (w *world) input() Input {
	return Input{
		Service:      w.svc,
		Tasks:        w.tasks,
		Nodes:        w.nodes,
		Now:          w.now,
		HistoryLimit: w.limit,
		NewID: func() string {
			w.ids++
			return fmt.Sprintf("n%d", w.ids)
		},
		Eligible: w.eligible,
	}
}

func (w *world) reconcile(t testing.TB) Result {
	t.Helper()
	in := w.input()
	before := cloneInput(in)
	r := Reconcile(in)
	if !inputEqual(before, in) {
		t.Fatalf("Reconcile changed its input")
	}
	checkResult(t, in, r)
	return r
}

// apply writes a result into the world, as the loop's store batch would.
func (w *world) apply(r Result) {
	byID := map[string]int{}
	for i, t := range w.tasks {
		byID[t.GetId()] = i
	}
	tasks := slices.Clone(w.tasks)
	for _, u := range r.Update {
		tasks[byID[u.GetId()]] = proto.Clone(u).(*typesv1.Task)
	}
	deleted := map[string]bool{}
	for _, id := range r.Delete {
		deleted[id] = true
	}
	tasks = slices.DeleteFunc(tasks, func(t *typesv1.Task) bool { return deleted[t.GetId()] })
	for _, c := range r.Create {
		tasks = append(tasks, proto.Clone(c).(*typesv1.Task))
	}
	w.tasks = tasks
	if r.ServiceUpdate != nil {
		w.svc = proto.Clone(r.ServiceUpdate).(*typesv1.Service)
	}
}

// step plays an agent: the task with this id moves to state st at now.
func (w *world) step(t testing.TB, id string, st typesv1.TaskState) {
	t.Helper()
	for i, task := range w.tasks {
		if task.GetId() == id {
			c := proto.Clone(task).(*typesv1.Task)
			c.Status.State = st
			c.Status.Timestamp = timestamppb.New(w.now)
			w.tasks[i] = c
			return
		}
	}
	t.Fatalf("no task %s", id)
}

func (w *world) find(id string) *typesv1.Task {
	for _, t := range w.tasks {
		if t.GetId() == id {
			return t
		}
	}
	return nil
}

// checkResult asserts what must hold for every result: every write is
// needed, no task is written twice, updates only raise the desired state,
// and new tasks are well formed.
func checkResult(t testing.TB, in Input, r Result) {
	t.Helper()
	tasks := map[string]*typesv1.Task{}
	for _, task := range in.Tasks {
		tasks[task.GetId()] = task
	}
	touched := map[string]bool{}
	for _, u := range r.Update {
		orig, ok := tasks[u.GetId()]
		switch {
		case !ok:
			t.Errorf("update of unknown task %s", u.GetId())
			continue
		case touched[u.GetId()]:
			t.Errorf("task %s written twice", u.GetId())
		case u.GetDesiredState() <= orig.GetDesiredState():
			t.Errorf("update of %s does not raise its desired state (%v → %v)", u.GetId(), orig.GetDesiredState(), u.GetDesiredState())
		case u == orig:
			t.Errorf("update of %s aliases the input", u.GetId())
		}
		touched[u.GetId()] = true
		c := proto.Clone(u).(*typesv1.Task)
		c.DesiredState = orig.GetDesiredState()
		if !proto.Equal(c, orig) {
			t.Errorf("update of %s changes more than its desired state", u.GetId())
		}
	}
	for _, id := range r.Delete {
		if _, ok := tasks[id]; !ok {
			t.Errorf("delete of unknown task %s", id)
		}
		if touched[id] {
			t.Errorf("task %s written twice", id)
		}
		touched[id] = true
	}
	svc := in.Service
	if r.ServiceUpdate != nil {
		svc = r.ServiceUpdate
	}
	for _, c := range r.Create {
		switch {
		case touched[c.GetId()] || c.GetId() == "":
			t.Errorf("new task has a used or empty id %q", c.GetId())
		case c.GetStatus().GetState() != NEW || c.GetDesiredState() != RUNNING || c.GetStatus().GetMessage() != "created":
			t.Errorf("new task %s: state %v desired %v", c.GetId(), c.GetStatus().GetState(), c.GetDesiredState())
		case !proto.Equal(c.GetSpec(), svc.GetSpec().GetTask()) || c.GetSpecVersion() != svc.GetSpecVersion():
			t.Errorf("new task %s does not carry the service's spec", c.GetId())
		case c.GetAnnotations().GetName() != TaskName(svc, c):
			t.Errorf("new task %s named %q", c.GetId(), c.GetAnnotations().GetName())
		case !c.GetStatus().GetTimestamp().AsTime().Equal(in.Now) || !createdAt(c).Equal(in.Now):
			t.Errorf("new task %s not stamped now", c.GetId())
		}
		touched[c.GetId()] = true
	}
	if r.Requeue < 0 {
		t.Errorf("negative requeue %v", r.Requeue)
	}
}

func cloneInput(in Input) Input {
	c := in
	if in.Service != nil {
		c.Service = proto.Clone(in.Service).(*typesv1.Service)
	}
	c.Tasks = nil
	for _, t := range in.Tasks {
		c.Tasks = append(c.Tasks, proto.Clone(t).(*typesv1.Task))
	}
	return c
}

func inputEqual(a, b Input) bool {
	if !proto.Equal(a.Service, b.Service) || len(a.Tasks) != len(b.Tasks) {
		return false
	}
	for i := range a.Tasks {
		if !proto.Equal(a.Tasks[i], b.Tasks[i]) {
			return false
		}
	}
	return true
}

// summary is a result in the words the tables use.
type summary struct {
	create  []string // names of new tasks
	update  []string // ids of tasks told to shut down
	delete  []string // ids
	status  typesv1.UpdateStatus_State
	message string
	requeue time.Duration
}

func summarize(r Result) summary {
	var s summary
	for _, c := range r.Create {
		s.create = append(s.create, c.GetAnnotations().GetName())
	}
	for _, u := range r.Update {
		s.update = append(s.update, u.GetId())
	}
	s.delete = slices.Clone(r.Delete)
	if r.ServiceUpdate != nil {
		s.status = r.ServiceUpdate.GetUpdateStatus().GetState()
		s.message = r.ServiceUpdate.GetUpdateStatus().GetMessage()
	}
	s.requeue = r.Requeue
	return s
}

func (s summary) String() string {
	st := "unchanged"
	if s.status != 0 {
		st = strings.TrimPrefix(s.status.String(), "STATE_")
	}
	return fmt.Sprintf("create %v, shut down %v, delete %v, status %s, requeue %v", s.create, s.update, s.delete, st, s.requeue)
}
