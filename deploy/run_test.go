package deploy

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// tc is one table case: a world and the summary of the result expected.
type tc struct {
	name     string
	svc      *typesv1.Service // nil: the service was removed
	tasks    []*typesv1.Task
	nodes    []*typesv1.Node
	now      time.Duration // from t0
	limit    int
	eligible func(*typesv1.Node, *typesv1.Task) bool
	want     summary
}

func (c tc) world() *world {
	return &world{svc: c.svc, tasks: withPolicy(c.svc, c.tasks), nodes: c.nodes, now: t0.Add(c.now), limit: c.limit, eligible: c.eligible}
}

// withPolicy gives the tasks the service's restart policy: a task copies
// its service's spec, and the task fixtures only know the image.
func withPolicy(svc *typesv1.Service, tasks []*typesv1.Task) []*typesv1.Task {
	out := make([]*typesv1.Task, len(tasks))
	for i, t := range tasks {
		t = proto.Clone(t).(*typesv1.Task)
		if rp := svc.GetSpec().GetTask().GetRestart(); rp != nil {
			t.Spec.Restart = proto.Clone(rp).(*typesv1.RestartPolicy)
		}
		out[i] = t
	}
	return out
}

// run checks every case three ways: the result is the one expected; it
// does not depend on the order of the tasks; and once applied, a second
// reconcile at the same time writes nothing.
func run(t *testing.T, cases []tc) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := c.world()
			r := w.reconcile(t)
			if got := summarize(r); !sameSummary(got, c.want) {
				t.Errorf("\ngot  %v\nwant %v", got, c.want)
			}

			rev := c.world()
			slices.Reverse(rev.tasks)
			slices.Reverse(rev.nodes)
			if r2 := rev.reconcile(t); !sameResult(r, r2) {
				t.Errorf("result depends on input order:\n%v\n%v", summarize(r), summarize(r2))
			}

			w.apply(r)
			if again := w.reconcile(t); !again.Empty() {
				t.Errorf("not idempotent: after applying the result, reconcile gives %v", summarize(again))
			}
		})
	}
}

func sameSummary(got, want summary) bool {
	set := func(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }
	return slices.Equal(got.create, want.create) &&
		slices.Equal(set(got.update), set(want.update)) &&
		slices.Equal(set(got.delete), set(want.delete)) &&
		got.status == want.status &&
		(want.message == "" || got.message == want.message) &&
		got.requeue == want.requeue
}

func sameResult(a, b Result) bool {
	eq := func(x, y []*typesv1.Task) bool {
		return slices.EqualFunc(x, y, func(p, q *typesv1.Task) bool { return proto.Equal(p, q) })
	}
	return eq(a.Create, b.Create) && eq(a.Update, b.Update) && slices.Equal(a.Delete, b.Delete) &&
		proto.Equal(a.ServiceUpdate, b.ServiceUpdate) && a.Requeue == b.Requeue
}
