package store

import (
	"errors"
	"strings"
	"testing"
	"time"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
)

// tableCase drives the same create/update/delete test through every table.
type tableCase struct {
	name   string
	mk     func(id string) proto.Message
	create func(b *Batch, o proto.Message)
	update func(b *Batch, o proto.Message)
	remove func(b *Batch, o proto.Message)
	get    func(tx ReadTx, id string) proto.Message
	find   func(tx ReadTx, by By) ([]proto.Message, error)
	change func(o proto.Message) // a visible modification
}

func caseOf[T object](name string, mk func(id string) T,
	create, update, remove func(*Batch, T),
	get func(ReadTx, string) T, find func(ReadTx, By) ([]T, error), change func(T),
) tableCase {
	return tableCase{
		name:   name,
		mk:     func(id string) proto.Message { return mk(id) },
		create: func(b *Batch, o proto.Message) { create(b, o.(T)) },
		update: func(b *Batch, o proto.Message) { update(b, o.(T)) },
		remove: func(b *Batch, o proto.Message) { remove(b, o.(T)) },
		get: func(tx ReadTx, id string) proto.Message {
			o := get(tx, id)
			if isNil(o) {
				return nil
			}
			return o
		},
		find: func(tx ReadTx, by By) ([]proto.Message, error) {
			objs, err := find(tx, by)
			out := make([]proto.Message, len(objs))
			for i, o := range objs {
				out[i] = o
			}
			return out, err
		},
		change: func(o proto.Message) { change(o.(T)) },
	}
}

var tableCases = []tableCase{
	caseOf("cluster", mkCluster, (*Batch).CreateCluster, (*Batch).UpdateCluster, (*Batch).DeleteCluster,
		GetCluster, FindClusters, func(o *typesv1.Cluster) { o.Spec.TaskHistoryLimit = 9 }),
	caseOf("node", func(id string) *typesv1.Node { return mkNode(id, "host-"+id) },
		(*Batch).CreateNode, (*Batch).UpdateNode, (*Batch).DeleteNode,
		GetNode, FindNodes, func(o *typesv1.Node) { o.Status.State = typesv1.NodeState_NODE_STATE_DOWN }),
	caseOf("service", func(id string) *typesv1.Service { return mkService(id, "svc-"+id, "") },
		(*Batch).CreateService, (*Batch).UpdateService, (*Batch).DeleteService,
		GetService, FindServices, func(o *typesv1.Service) { o.SpecVersion++ }),
	caseOf("task", func(id string) *typesv1.Task { return mkTask(id, "svc1", "web", "", "", 1) },
		(*Batch).CreateTask, (*Batch).UpdateTask, (*Batch).DeleteTask,
		GetTask, FindTasks, func(o *typesv1.Task) { o.Status.State = typesv1.TaskState_TASK_STATE_RUNNING }),
	caseOf("network", func(id string) *typesv1.Network { return mkNetwork(id, "net-"+id, "") },
		(*Batch).CreateNetwork, (*Batch).UpdateNetwork, (*Batch).DeleteNetwork,
		GetNetwork, FindNetworks, func(o *typesv1.Network) { o.Vni = 4097 }),
	caseOf("secret", func(id string) *typesv1.Secret { return mkSecret(id, "sec-"+id, "") },
		(*Batch).CreateSecret, (*Batch).UpdateSecret, (*Batch).DeleteSecret,
		GetSecret, FindSecrets, func(o *typesv1.Secret) { o.Spec.Annotations.Labels = map[string]string{"a": "b"} }),
	caseOf("config", func(id string) *typesv1.Config { return mkConfig(id, "cfg-"+id, "") },
		(*Batch).CreateConfig, (*Batch).UpdateConfig, (*Batch).DeleteConfig,
		GetConfig, FindConfigs, func(o *typesv1.Config) { o.Spec.Data = []byte("v2") }),
}

func metaOf(o proto.Message) *typesv1.Meta {
	return o.(interface{ GetMeta() *typesv1.Meta }).GetMeta()
}

func TestApplyCreateUpdateDeleteEveryTable(t *testing.T) {
	for _, tc := range tableCases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			get := func(id string) proto.Message {
				var o proto.Message
				h.s.View(func(tx ReadTx) { o = tc.get(tx, id) })
				return o
			}

			idx := h.commit(func(b *Batch) { tc.create(b, tc.mk("a")); tc.create(b, tc.mk("b")) })
			a := get("a")
			if a == nil {
				t.Fatal("created object not found")
			}
			if m := metaOf(a); m.GetVersion() != idx || !m.GetCreatedAt().AsTime().Equal(t0) || !m.GetUpdatedAt().AsTime().Equal(t0) {
				t.Fatalf("meta after create = %v, want version %d and times %v", m, idx, t0)
			}
			var all []proto.Message
			h.s.View(func(tx ReadTx) { all, _ = tc.find(tx, All) })
			if len(all) != 2 {
				t.Fatalf("Find(All) returned %d objects, want 2", len(all))
			}

			// A later clock shows that an update stamps updated_at only.
			t1 := t0.Add(time.Minute)
			h.s.Now = func() time.Time { return t1 }
			tc.change(a)
			idx2 := h.commit(func(b *Batch) { tc.update(b, a) })
			got := get("a")
			m := metaOf(got)
			if m.GetVersion() != idx2 || !m.GetCreatedAt().AsTime().Equal(t0) || !m.GetUpdatedAt().AsTime().Equal(t1) {
				t.Fatalf("meta after update = %v, want version %d, created %v, updated %v", m, idx2, t0, t1)
			}
			want := proto.Clone(a)
			metaOf(want).Version, metaOf(want).UpdatedAt = m.GetVersion(), m.GetUpdatedAt()
			if !proto.Equal(got, want) {
				t.Fatalf("after update got %v, want %v", got, want)
			}

			h.commit(func(b *Batch) { tc.remove(b, got) })
			if o := get("a"); o != nil {
				t.Fatalf("object still there after delete: %v", o)
			}
			if get("b") == nil {
				t.Fatal("deleting a removed b too")
			}
		})
	}
}

// TestApplyRejectsWholeBatch: every failing action leaves the store exactly
// as it was, although valid actions come before it in the batch.
func TestApplyRejectsWholeBatch(t *testing.T) {
	type fixture struct {
		svc  *typesv1.Service // "s1" named web
		net  *typesv1.Network // "n1" named front
		task *typesv1.Task    // "t1"
	}
	cases := []struct {
		name    string
		build   func(b *Batch, f fixture)
		raw     func(f fixture) *storev1.Batch // instead of build, for batches the builder cannot make
		want    error
		message string // a part of the error text
	}{
		{
			name: "stale update",
			build: func(b *Batch, f fixture) {
				f.task.Meta.Version--
				b.UpdateTask(f.task)
			},
			want: ErrSequenceConflict, message: "update task t1: out of sequence",
		},
		{
			name: "stale remove",
			build: func(b *Batch, f fixture) {
				f.svc.Meta.Version = 99
				b.DeleteService(f.svc)
			},
			want: ErrSequenceConflict, message: "remove service s1",
		},
		{
			name:  "update without meta",
			build: func(b *Batch, f fixture) { f.task.Meta = nil; b.UpdateTask(f.task) },
			want:  ErrSequenceConflict, message: "read at version 0",
		},
		{
			name:  "update of a missing object",
			build: func(b *Batch, f fixture) { b.UpdateTask(mkTask("nope", "s1", "web", "", "", 2)) },
			want:  ErrNotExist, message: "update task nope: no such task",
		},
		{
			name:  "remove of a missing object",
			build: func(b *Batch, f fixture) { b.DeleteNetwork(mkNetwork("nope", "x", "")) },
			want:  ErrNotExist, message: "remove network nope",
		},
		{
			name:  "create of an existing id",
			build: func(b *Batch, f fixture) { b.CreateTask(mkTask("t1", "s1", "web", "", "", 2)) },
			want:  ErrExist, message: "create task t1: it already exists",
		},
		{
			name:  "service name in use",
			build: func(b *Batch, f fixture) { b.CreateService(mkService("s2", "web", "")) },
			want:  ErrNameConflict, message: `service name "web" is already in use`,
		},
		{
			name:  "service names differ only in case",
			build: func(b *Batch, f fixture) { b.CreateService(mkService("s2", "WEB", "")) },
			want:  ErrNameConflict, message: `service name "WEB" is already in use`,
		},
		{
			name: "two new services of one name",
			build: func(b *Batch, f fixture) {
				b.CreateService(mkService("s2", "api", ""))
				b.CreateService(mkService("s3", "api", ""))
			},
			want: ErrNameConflict, message: `service name "api" is already in use`,
		},
		{
			name: "rename onto a taken name",
			build: func(b *Batch, f fixture) {
				b.CreateService(mkService("s2", "api", ""))
				f.svc.Spec.Annotations.Name = "api"
				b.UpdateService(f.svc)
			},
			want: ErrNameConflict, message: `service name "api" is already in use`,
		},
		{
			name:  "network name in use",
			build: func(b *Batch, f fixture) { b.CreateNetwork(mkNetwork("n2", "front", "")) },
			want:  ErrNameConflict, message: `network name "front" is already in use`,
		},
		{
			name: "secret name in use",
			build: func(b *Batch, f fixture) {
				b.CreateSecret(mkSecret("x1", "pw", ""))
				b.CreateSecret(mkSecret("x2", "pw", ""))
			},
			want: ErrNameConflict, message: `secret name "pw" is already in use`,
		},
		{
			name:  "two actions on one object",
			build: func(b *Batch, f fixture) { b.UpdateTask(f.task); b.DeleteTask(f.task) },
			want:  ErrInvalid, message: "the batch already changes this task",
		},
		{
			name:  "empty id",
			build: func(b *Batch, f fixture) { b.CreateTask(mkTask("", "s1", "web", "", "", 2)) },
			want:  ErrInvalid, message: "create task: empty id",
		},
		{
			name:  "nil object",
			build: func(b *Batch, f fixture) { b.CreateService(nil) },
			want:  ErrInvalid, message: "empty target",
		},
		{
			name: "unknown kind",
			raw: func(f fixture) *storev1.Batch {
				return &storev1.Batch{Actions: []*storev1.StoreAction{
					{Kind: storev1.StoreAction_KIND_CREATE, Target: &storev1.StoreAction_Task{Task: mkTask("t9", "s1", "web", "", "", 9)}},
					{Kind: 7, Target: &storev1.StoreAction_Task{Task: f.task}},
				}}
			},
			want: ErrInvalid, message: "task t1: unknown action kind 7",
		},
		{
			name: "kind unknown (zero)",
			raw: func(f fixture) *storev1.Batch {
				return &storev1.Batch{Actions: []*storev1.StoreAction{{Target: &storev1.StoreAction_Task{Task: f.task}}}}
			},
			want: ErrInvalid, message: "unknown action kind 0",
		},
		{
			name: "empty target",
			raw: func(f fixture) *storev1.Batch {
				return &storev1.Batch{Actions: []*storev1.StoreAction{{Kind: storev1.StoreAction_KIND_UPDATE}}}
			},
			want: ErrInvalid, message: "update action with an empty target",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.commit(func(b *Batch) {
				b.CreateService(mkService("s1", "web", "shop"))
				b.CreateNetwork(mkNetwork("n1", "front", "shop"))
				b.CreateTask(mkTask("t1", "s1", "web", "shop", "node1", 1))
			})
			// A second entry gives the objects different versions.
			h.commit(func(b *Batch) { b.UpdateTask(h.task("t1")) })
			var f fixture
			h.s.View(func(tx ReadTx) {
				f = fixture{svc: GetService(tx, "s1"), net: GetNetwork(tx, "n1"), task: GetTask(tx, "t1")}
			})
			before, beforeIdx := h.s.Snapshot(), h.s.Index()
			events := h.s.Watch(t.Context())

			var batch *storev1.Batch
			if tc.raw != nil {
				batch = tc.raw(f)
			} else {
				b := h.s.NewBatch()
				// Valid changes first: they must not survive the failure.
				b.CreateTask(mkTask("tx", "s1", "web", "shop", "", 7))
				b.CreateService(mkService("sx", "other", ""))
				tc.build(b, f)
				batch = b.Proto()
			}
			err := h.s.Apply(batch, beforeIdx+1)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Apply(%v) = %v, want %v", kinds(batch), err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("error %q does not say %q", err, tc.message)
			}
			if after := h.s.Snapshot(); !proto.Equal(before, after) {
				t.Fatalf("a rejected batch changed the store:\nbefore %v\nafter  %v", before, after)
			}
			if got := h.s.Index(); got != beforeIdx+1 {
				t.Fatalf("Index after a rejected entry = %d, want %d (the entry was applied, as a no-op)", got, beforeIdx+1)
			}
			// Nothing was published: the next event is the next good batch.
			idx := h.commit(func(b *Batch) { b.CreateNode(mkNode("nd", "h")) })
			if ev := <-events; ev.Index != idx || ev.Kind != storev1.StoreAction_KIND_CREATE {
				t.Fatalf("first event after the rejected batch = %+v, want the create at %d", ev, idx)
			}
		})
	}
}

func TestNamesPassWithinOneBatch(t *testing.T) {
	h := newHarness(t)
	h.commit(func(b *Batch) {
		b.CreateService(mkService("s1", "web", ""))
		b.CreateService(mkService("s2", "api", ""))
	})
	s1, s2 := h.service("s1"), h.service("s2")

	// Swap the names in one batch: the state after the batch is unique.
	s1.Spec.Annotations.Name, s2.Spec.Annotations.Name = "api", "web"
	h.commit(func(b *Batch) { b.UpdateService(s1); b.UpdateService(s2) })
	h.s.View(func(tx ReadTx) {
		for name, id := range map[string]string{"api": "s1", "web": "s2", "WEB": "s2"} {
			got, err := FindServices(tx, ByName(name))
			if err != nil || len(got) != 1 || got[0].GetId() != id {
				t.Errorf("FindServices(ByName(%q)) = %v, %v; want %s", name, got, err, id)
			}
		}
	})

	// Removing a service frees its name for a create in the same batch.
	s1 = h.service("s1")
	h.commit(func(b *Batch) { b.DeleteService(s1); b.CreateService(mkService("s3", "api", "")) })
	// And renaming frees the old name for good.
	s2 = h.service("s2")
	s2.Spec.Annotations.Name = "www"
	h.commit(func(b *Batch) { b.UpdateService(s2) })
	h.commit(func(b *Batch) { b.CreateService(mkService("s4", "web", "")) })

	// Tasks and nodes may share names.
	h.commit(func(b *Batch) {
		b.CreateTask(mkTask("t1", "s3", "api", "", "", 1))
		b.CreateTask(mkTask("t2", "s3", "api", "", "", 1))
		b.CreateNode(mkNode("n1", "box"))
		b.CreateNode(mkNode("n2", "box"))
	})
	if ids := taskIDs(t, h.s, ByName("api.1")); len(ids) != 2 {
		t.Fatalf("tasks named api.1 = %v, want both", ids)
	}
}

func TestApplyOutOfOrderIndex(t *testing.T) {
	s := New()
	if err := s.Apply(&storev1.Batch{}, 5); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{5, 3} {
		if err := s.Apply(&storev1.Batch{}, idx); !errors.Is(err, ErrInvalid) {
			t.Errorf("Apply at %d after 5 = %v, want ErrInvalid", idx, err)
		}
	}
	if s.Index() != 5 {
		t.Fatalf("Index = %d, want 5", s.Index())
	}
}

// TestApplyCopies: the store keeps neither the caller's batch objects nor
// hands out its own.
func TestApplyCopies(t *testing.T) {
	s := New()
	task := mkTask("t1", "s1", "web", "", "n1", 1)
	b := NewBatch(t0)
	b.CreateTask(task)
	batch := b.Proto()
	if err := s.Apply(batch, 1); err != nil {
		t.Fatal(err)
	}
	task.NodeId = "changed-after-add"
	batch.Actions[0].GetTask().NodeId = "changed-after-apply"
	var got *typesv1.Task
	s.View(func(tx ReadTx) { got = GetTask(tx, "t1") })
	if got.GetNodeId() != "n1" {
		t.Fatalf("stored node id = %q, want n1", got.GetNodeId())
	}
	got.NodeId = "changed-by-reader"
	s.View(func(tx ReadTx) { got = GetTask(tx, "t1") })
	if got.GetNodeId() != "n1" {
		t.Fatalf("stored node id = %q after a reader modified its copy", got.GetNodeId())
	}
	if ids := taskIDs(t, s, ByNodeID("n1")); len(ids) != 1 {
		t.Fatalf("node index = %v", ids)
	}
}
