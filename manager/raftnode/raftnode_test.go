package raftnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/shoal-dev/shoal/manager/store"
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/proto"
)

// testLogger writes to the test's output, shown on failure or with -v.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// open starts a node on a kernel-chosen loopback port.
func open(t testing.TB, dir, id string, bootstrap bool, mod ...func(*Config)) (*Node, *store.Store) {
	t.Helper()
	s := store.New()
	s.Logger = testLogger(t).With("component", "store", "node.id", id)
	cfg := Config{
		DataDir: dir, ID: id, BindAddr: "127.0.0.1:0", Bootstrap: bootstrap,
		Store: s, Logger: testLogger(t),
	}
	for _, m := range mod {
		m(&cfg)
	}
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	t.Cleanup(func() { n.Shutdown() })
	return n, s
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitLeader(t testing.TB, within time.Duration, nodes ...*Node) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, within, "a leader", func() bool {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func mkService(id, name string) *typesv1.Service {
	return &typesv1.Service{Id: id, Spec: &typesv1.ServiceSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: map[string]string{store.StackLabel: "shop"}},
	}}
}

func mkTask(id, serviceID string, slot uint64) *typesv1.Task {
	return &typesv1.Task{Id: id, ServiceId: serviceID, Slot: slot,
		DesiredState: typesv1.TaskState_TASK_STATE_RUNNING,
		Status:       &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_NEW}}
}

// deployBatch is a service with its tasks, as a stack deploy writes.
func deployBatch(svcID string, replicas int) *storev1.Batch {
	b := store.NewBatch(time.Now())
	b.CreateService(mkService(svcID, "shop_"+svcID))
	for i := range replicas {
		b.CreateTask(mkTask(fmt.Sprintf("%s-t%d", svcID, i), svcID, uint64(i+1)))
	}
	return b.Proto()
}

func TestSingleNode(t *testing.T) {
	n, s := open(t, t.TempDir(), "m1", true)
	waitLeader(t, 5*time.Second, n)
	select {
	case v := <-n.LeaderCh():
		if !v {
			t.Fatal("LeaderCh delivered false to a leader")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LeaderCh silent")
	}
	if err := n.Barrier(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if addr, id := n.Leader(); addr != n.Addr() || id != "m1" {
		t.Fatalf("Leader() = %s %s, want %s m1", addr, id, n.Addr())
	}
	servers, err := n.Servers()
	if err != nil || len(servers) != 1 || string(servers[0].ID) != "m1" {
		t.Fatalf("Servers() = %v, %v", servers, err)
	}

	idx, err := n.Propose(ctx(t), deployBatch("web", 3))
	if err != nil {
		t.Fatal(err)
	}
	var task *typesv1.Task
	var tasks []*typesv1.Task
	s.View(func(tx store.ReadTx) {
		task = store.GetTask(tx, "web-t0")
		tasks, _ = store.FindTasks(tx, store.ByServiceID("web"))
	})
	if task.GetMeta().GetVersion() != idx || len(tasks) != 3 || s.Index() != idx {
		t.Fatalf("after propose at %d: task %v, %d tasks, store index %d", idx, task, len(tasks), s.Index())
	}

	// A stale update comes back as the store's sentinel, and changes nothing.
	before := s.Snapshot()
	b := store.NewBatch(time.Now())
	task.Meta.Version--
	task.NodeId = "n1"
	b.UpdateTask(task)
	if _, err := n.Propose(ctx(t), b.Proto()); !errors.Is(err, store.ErrSequenceConflict) {
		t.Fatalf("stale update: %v, want ErrSequenceConflict", err)
	}
	if _, err := n.Propose(ctx(t), deployBatch("web", 0)); !errors.Is(err, store.ErrExist) {
		t.Fatalf("second create: %v, want ErrExist", err)
	}
	b = store.NewBatch(time.Now())
	b.CreateService(mkService("other", "SHOP_web"))
	if _, err := n.Propose(ctx(t), b.Proto()); !errors.Is(err, store.ErrNameConflict) ||
		err.Error() != `service name "SHOP_web" is already in use` {
		t.Fatalf("name conflict: %v", err)
	}
	if !proto.Equal(before, s.Snapshot()) {
		t.Fatal("rejected batches changed the store")
	}

	// A good update after the rejected ones.
	task.Meta.Version++
	b = store.NewBatch(time.Now())
	b.UpdateTask(task)
	if _, err := n.Propose(ctx(t), b.Proto()); err != nil {
		t.Fatal(err)
	}

	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Propose(ctx(t), deployBatch("x", 1)); err == nil {
		t.Fatal("Propose after Shutdown succeeded")
	}
	if v := <-n.LeaderCh(); v {
		t.Fatal("LeaderCh did not say false after Shutdown")
	}
}

func TestRestartRestoresFromLog(t *testing.T) {
	dir := t.TempDir()
	n, s := open(t, dir, "m1", true)
	waitLeader(t, 5*time.Second, n)
	for i := range 5 {
		if _, err := n.Propose(ctx(t), deployBatch(fmt.Sprint("svc", i), 10)); err != nil {
			t.Fatal(err)
		}
	}
	want, wantIdx := s.Snapshot(), s.Index()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// Bootstrap is ignored when state exists.
	n2, s2 := open(t, dir, "m1", true)
	waitLeader(t, 5*time.Second, n2)
	if err := n2.Barrier(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, s2.Snapshot()) || s2.Index() != wantIdx {
		t.Fatalf("after restart: index %d (want %d), equal %v", s2.Index(), wantIdx, proto.Equal(want, s2.Snapshot()))
	}
	// And it goes on writing.
	if _, err := n2.Propose(ctx(t), deployBatch("after", 1)); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotAndRestore(t *testing.T) {
	dir := t.TempDir()
	// Few trailing logs: after the snapshot the log no longer holds the
	// early entries, so the restart must read the snapshot.
	small := func(c *Config) { c.TrailingLogs = 2; c.SnapshotThreshold = 1 << 20; c.SnapshotInterval = time.Hour }
	n, s := open(t, dir, "m1", true, small)
	waitLeader(t, 5*time.Second, n)
	for i := range 10 {
		if _, err := n.Propose(ctx(t), deployBatch(fmt.Sprint("svc", i), 20)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snapIdx := s.Index()
	// Entries after the snapshot come from the log.
	for i := 10; i < 12; i++ {
		if _, err := n.Propose(ctx(t), deployBatch(fmt.Sprint("svc", i), 20)); err != nil {
			t.Fatal(err)
		}
	}
	want, wantIdx := s.Snapshot(), s.Index()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots on disk: %v", snaps)
	}

	n2, s2 := open(t, dir, "m1", false, small)
	// Open restored the snapshot before any election.
	if got := s2.Index(); got != snapIdx {
		t.Fatalf("index right after Open = %d, want the snapshot's %d", got, snapIdx)
	}
	var svcs []*typesv1.Service
	s2.View(func(tx store.ReadTx) { svcs, _ = store.FindServices(tx, store.All) })
	if len(svcs) != 10 {
		t.Fatalf("%d services from the snapshot, want 10", len(svcs))
	}
	waitLeader(t, 5*time.Second, n2)
	if err := n2.Barrier(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, s2.Snapshot()) || s2.Index() != wantIdx {
		t.Fatalf("after restart: index %d (want %d), equal %v", s2.Index(), wantIdx, proto.Equal(want, s2.Snapshot()))
	}
	// The log was really compacted: the snapshot was needed.
	first, err := n2.logs.FirstIndex()
	if err != nil || first <= 1 {
		t.Fatalf("log first index %d, %v: the log was not compacted", first, err)
	}
}

func TestThreeNodes(t *testing.T) {
	n1, s1 := open(t, t.TempDir(), "m1", true)
	waitLeader(t, 5*time.Second, n1)
	n2, s2 := open(t, t.TempDir(), "m2", false)
	n3, s3 := open(t, t.TempDir(), "m3", false)
	for _, n := range []*Node{n2, n3} {
		if err := n1.AddVoter(n.ID(), n.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	nodes, stores := []*Node{n1, n2, n3}, []*store.Store{s1, s2, s3}
	servers, err := n1.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("Servers() = %v, %v", servers, err)
	}

	leader := waitLeader(t, 5*time.Second, nodes...)
	var last uint64
	for i := range 5 {
		if last, err = leader.Propose(ctx(t), deployBatch(fmt.Sprint("svc", i), 5)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "followers caught up", func() bool {
		return s2.Index() >= last && s3.Index() >= last
	})

	// A follower refuses writes and names the leader.
	var follower *Node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	_, err = follower.Propose(ctx(t), deployBatch("nope", 1))
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderAddr != leader.Addr() || nle.LeaderID != leader.ID() {
		t.Fatalf("Propose on a follower = %v, want ErrNotLeader naming %s at %s", err, leader.ID(), leader.Addr())
	}

	// Kill the leader: another is elected within 3 s, with every committed
	// batch.
	var leaderStore *store.Store
	var rest []*Node
	var restStores []*store.Store
	for i, n := range nodes {
		if n == leader {
			leaderStore = stores[i]
		} else {
			rest = append(rest, n)
			restStores = append(restStores, stores[i])
		}
	}
	committed := leaderStore.Snapshot()
	start := time.Now()
	if err := leader.Shutdown(); err != nil {
		t.Fatal(err)
	}
	newLeader := waitLeader(t, 3*time.Second, rest...)
	elapsed := time.Since(start)
	t.Logf("new leader %s elected %v after the leader's shutdown", newLeader.ID(), elapsed.Round(time.Millisecond))
	if err := newLeader.Barrier(ctx(t)); err != nil {
		t.Fatal(err)
	}
	for i, n := range rest {
		if n == newLeader && !proto.Equal(committed, restStores[i].Snapshot()) {
			t.Fatal("the new leader lacks committed batches")
		}
	}
	if _, err := newLeader.Propose(ctx(t), deployBatch("after", 2)); err != nil {
		t.Fatal(err)
	}
	// The surviving follower names the new leader.
	for _, n := range rest {
		if n != newLeader {
			waitFor(t, 5*time.Second, "follower learns the new leader", func() bool {
				addr, _ := n.Leader()
				return addr == newLeader.Addr()
			})
		}
	}
}

func TestUnknownEntryPanics(t *testing.T) {
	f := (*fsm)(store.New())
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("an unknown entry type was applied")
		} else {
			t.Logf("panic: %v", r)
		}
	}()
	f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: []byte{99, 1, 2}})
}

func TestEntryAndSnapshotFormats(t *testing.T) {
	b := deployBatch("web", 2)
	data, err := encodeBatch(b)
	if err != nil || data[0] != entryBatchV1 {
		t.Fatalf("encode: %v %v", data[:1], err)
	}
	got, err := decodeBatch(data)
	if err != nil || !proto.Equal(got, b) {
		t.Fatalf("decode: %v", err)
	}
	if _, err := decodeBatch(nil); err == nil {
		t.Fatal("empty entry decoded")
	}

	s := store.New()
	if _, err := store.NewLocalProposer(s).Propose(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	snap, idx := s.SnapshotShared()
	var buf bytes.Buffer
	if err := (&fsmSnapshot{snap: snap, index: idx}).write(&buf); err != nil {
		t.Fatal(err)
	}
	r := store.New()
	if err := (*fsm)(r).Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if r.Index() != idx || !proto.Equal(r.Snapshot(), s.Snapshot()) {
		t.Fatal("snapshot round trip differs")
	}
	for name, bad := range map[string][]byte{
		"truncated":      {snapshotV1, 0, 0},
		"unknown format": append([]byte{7}, buf.Bytes()[1:]...),
	} {
		if err := (*fsm)(store.New()).Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
			t.Errorf("%s snapshot restored", name)
		}
	}
}

func TestOpenChecksConfig(t *testing.T) {
	if _, err := Open(Config{DataDir: t.TempDir(), ID: "x", BindAddr: ":0", Store: store.New(), Logger: testLogger(t)}); err == nil {
		t.Fatal("an unspecified bind address without advertise address was accepted")
	}
	used := store.New()
	if err := used.Apply(deployBatch("web", 1), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{DataDir: t.TempDir(), ID: "x", BindAddr: "127.0.0.1:0", Store: used, Logger: testLogger(t)}); err == nil {
		t.Fatal("a store that is not empty was accepted")
	}
	n, _ := open(t, t.TempDir(), "x", true, func(c *Config) { c.BindAddr = ":0"; c.AdvertiseAddr = "127.0.0.1" })
	if host, port, _ := net.SplitHostPort(n.Addr()); host != "127.0.0.1" || port == "0" {
		t.Fatalf("advertised %s", n.Addr())
	}
	waitLeader(t, 5*time.Second, n)
}
