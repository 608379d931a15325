package deploy

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// IsTerminal reports whether a task in this state has ended: COMPLETE,
// SHUTDOWN, FAILED, REJECTED, REMOVE or ORPHANED. States only move forward,
// so a terminal task never runs again.
func IsTerminal(s typesv1.TaskState) bool {
	return s >= typesv1.TaskState_TASK_STATE_COMPLETE
}

// TaskName is the name a task shows in `service ps`: "<service>.<slot>" for
// a replicated service, "<service>.<node id>" for a global one. svc may be
// nil (the service was removed); the task's own copy of the service
// annotations then gives the name and its slot tells the mode.
func TaskName(svc *typesv1.Service, task *typesv1.Task) string {
	name := task.GetServiceAnnotations().GetName()
	global := task.GetSlot() == 0
	if svc != nil {
		name = svc.GetSpec().GetAnnotations().GetName()
		global = isGlobal(svc)
	}
	if global {
		return name + "." + task.GetNodeId()
	}
	return name + "." + strconv.FormatUint(task.GetSlot(), 10)
}

// NewTask returns a task of svc for a slot (replicated) or a node (global,
// slot 0), ready to be created: state NEW, desired RUNNING, the service's
// task spec, spec version and annotations copied into it so that later
// changes to the service do not reach tasks already made.
//
// Meta.created_at is set to now: the rolling update tells the tasks it
// started from older ones by their creation time, and a store that stamps
// its own creation time keeps that order.
func NewTask(svc *typesv1.Service, slot uint64, nodeID string, now time.Time, id string) *typesv1.Task {
	spec := svc.GetSpec()
	t := &typesv1.Task{
		Id:           id,
		Meta:         &typesv1.Meta{CreatedAt: timestamppb.New(now), UpdatedAt: timestamppb.New(now)},
		SpecVersion:  svc.GetSpecVersion(),
		ServiceId:    svc.GetId(),
		Slot:         slot,
		NodeId:       nodeID,
		DesiredState: typesv1.TaskState_TASK_STATE_RUNNING,
		Status: &typesv1.TaskStatus{
			Timestamp: timestamppb.New(now),
			State:     typesv1.TaskState_TASK_STATE_NEW,
			Message:   "created",
		},
	}
	if ts := spec.GetTask(); ts != nil {
		t.Spec = proto.Clone(ts).(*typesv1.TaskSpec)
	}
	if a := spec.GetAnnotations(); a != nil {
		t.ServiceAnnotations = proto.Clone(a).(*typesv1.Annotations)
	}
	if ep := spec.GetEndpoint(); ep != nil {
		// The allocator fills in ports and addresses from this spec.
		t.Endpoint = &typesv1.Endpoint{Spec: proto.Clone(ep).(*typesv1.EndpointSpec)}
	}
	t.Annotations = &typesv1.Annotations{Name: TaskName(svc, t)}
	if labels := spec.GetAnnotations().GetLabels(); len(labels) > 0 {
		t.Annotations.Labels = make(map[string]string, len(labels))
		for k, v := range labels {
			t.Annotations.Labels[k] = v
		}
	}
	return t
}

func isGlobal(svc *typesv1.Service) bool {
	return svc.GetSpec().GetGlobal() != nil
}

// specEqual compares task specs, an absent spec being the empty one (proto
// does not consider a nil message equal to an empty one).
func specEqual(a, b *typesv1.TaskSpec) bool {
	if a == nil {
		a = &typesv1.TaskSpec{}
	}
	if b == nil {
		b = &typesv1.TaskSpec{}
	}
	return proto.Equal(a, b)
}

func createdAt(t *typesv1.Task) time.Time {
	return asTime(t.GetMeta().GetCreatedAt())
}

// statusTime is when the task's status last changed: for a RUNNING task
// the moment it started running, for a terminal one the moment it ended
// (states only move forward, so the agent stamps each state once).
func statusTime(t *typesv1.Task) time.Time {
	return asTime(t.GetStatus().GetTimestamp())
}

func asTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// olderFirst orders tasks by creation, the id breaking ties so that the
// order never depends on the input's order.
func olderFirst(a, b *typesv1.Task) int {
	if c := createdAt(a).Compare(createdAt(b)); c != 0 {
		return c
	}
	switch {
	case a.GetId() < b.GetId():
		return -1
	case a.GetId() > b.GetId():
		return 1
	}
	return 0
}

func state(t *typesv1.Task) typesv1.TaskState { return t.GetStatus().GetState() }

// duration reads an optional proto duration: def when absent, never
// negative.
func duration(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return max(d.AsDuration(), 0)
}
