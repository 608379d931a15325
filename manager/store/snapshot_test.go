package store

import (
	"errors"
	"testing"

	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
)

// fill puts objects in every table.
func fill(h *harness) {
	h.commit(func(b *Batch) {
		b.CreateCluster(mkCluster("c1"))
		b.CreateNode(mkNode("n1", "alpha"))
		b.CreateNode(mkNode("n2", "beta"))
		b.CreateService(mkService("s1", "shop_web", "shop"))
		b.CreateService(mkService("s2", "shop_db", "shop"))
		b.CreateNetwork(mkNetwork("net1", "shop_default", "shop"))
		b.CreateSecret(mkSecret("sec1", "shop_pw", "shop"))
		b.CreateConfig(mkConfig("cfg1", "shop_conf", "shop"))
		for i, svc := range []string{"s1", "s1", "s2"} {
			b.CreateTask(mkTask("t"+string(rune('1'+i)), svc, "shop_"+svc, "shop", "n1", uint64(i+1)))
		}
	})
	t1 := h.task("t1")
	t1.NodeId = "n2"
	h.commit(func(b *Batch) { b.UpdateTask(t1) })
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := newHarness(t)
	fill(h)
	snap := h.s.Snapshot()
	if snap.GetVersion() != SnapshotVersion {
		t.Fatalf("snapshot version %d", snap.GetVersion())
	}

	// Through bytes, as Raft stores it.
	data, err := proto.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	var decoded storev1.Snapshot
	if err := proto.Unmarshal(data, &decoded); err != nil {
		t.Fatal(err)
	}
	r := New()
	if err := r.Restore(&decoded, h.s.Index()); err != nil {
		t.Fatal(err)
	}
	if r.Index() != h.s.Index() {
		t.Fatalf("restored index %d, want %d", r.Index(), h.s.Index())
	}

	// Every table, object by object.
	eq := func(name string, a, b []proto.Message, err1, err2 error) {
		t.Helper()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if len(a) == 0 || len(a) != len(b) {
			t.Fatalf("%s: %d objects before, %d after", name, len(a), len(b))
		}
		for i := range a {
			if !proto.Equal(a[i], b[i]) {
				t.Fatalf("%s %d differs:\n%v\n%v", name, i, a[i], b[i])
			}
		}
	}
	for _, tc := range tableCases {
		var before, after []proto.Message
		var err1, err2 error
		h.s.View(func(tx ReadTx) { before, err1 = tc.find(tx, All) })
		r.View(func(tx ReadTx) { after, err2 = tc.find(tx, All) })
		eq(tc.name, before, after, err1, err2)
	}
	if !proto.Equal(snap, r.Snapshot()) {
		t.Fatal("snapshot of the restored store differs")
	}

	// Indexes were rebuilt, and names are still unique.
	if got := taskIDs(t, r, ByServiceID("s1")); len(got) != 2 {
		t.Fatalf("restored service index: %v", got)
	}
	if got := taskIDs(t, r, ByNodeID("n2")); len(got) != 1 || got[0] != "t1" {
		t.Fatalf("restored node index: %v", got)
	}
	if got := taskIDs(t, r, ByStack("shop")); len(got) != 3 {
		t.Fatalf("restored stack index: %v", got)
	}
	rp := NewLocalProposer(r)
	b := NewBatch(t0)
	b.CreateService(mkService("s9", "shop_web", ""))
	if _, err := rp.Propose(t.Context(), b.Proto()); !errors.Is(err, ErrNameConflict) {
		t.Fatalf("name index not restored: %v", err)
	}
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	h := newHarness(t)
	fill(h)
	good := h.s.Snapshot()
	cases := map[string]struct {
		mod  func(s *storev1.Snapshot)
		want error
	}{
		"unknown version": {func(s *storev1.Snapshot) { s.Version = 2 }, ErrInvalid},
		"no version":      {func(s *storev1.Snapshot) { s.Version = 0 }, ErrInvalid},
		"duplicate id":    {func(s *storev1.Snapshot) { s.Tasks = append(s.Tasks, s.Tasks[0]) }, ErrInvalid},
		"empty id":        {func(s *storev1.Snapshot) { s.Nodes = append(s.Nodes, &typesv1.Node{}) }, ErrInvalid},
		"duplicate name": {func(s *storev1.Snapshot) {
			s.Networks = append(s.Networks, mkNetwork("net2", "SHOP_default", ""))
		}, ErrNameConflict},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			target := newHarness(t)
			fill(target)
			before, idx := target.s.Snapshot(), target.s.Index()
			bad := proto.CloneOf(good)
			tc.mod(bad)
			if err := target.s.Restore(bad, 99); !errors.Is(err, tc.want) {
				t.Fatalf("Restore = %v, want %v", err, tc.want)
			}
			if !proto.Equal(before, target.s.Snapshot()) || target.s.Index() != idx {
				t.Fatal("a failed restore changed the store")
			}
		})
	}
}
