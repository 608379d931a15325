package raftnode

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkProposeTaskStatus measures committed task-status update batches
// on a single-node Raft on disk (bbolt with fsync), with batches of 1, 10
// and 100 task updates, from one proposer (each batch waits for the one
// before: the commit latency bound) and from 16 concurrent ones (agents'
// status bursts: raft writes the queued entries together).
func BenchmarkProposeTaskStatus(b *testing.B) {
	for _, size := range []int{1, 10, 100} {
		for _, proposers := range []int{1, 16} {
			b.Run(fmt.Sprintf("batch=%d/proposers=%d", size, proposers), func(b *testing.B) {
				benchPropose(b, size, proposers)
			})
		}
	}
}

func benchPropose(b *testing.B, size, proposers int) {
	s := store.New()
	s.Logger = slog.New(slog.DiscardHandler)
	n, err := Open(Config{
		DataDir: b.TempDir(), ID: "m1", BindAddr: "127.0.0.1:0", Bootstrap: true,
		Store: s, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown()
	waitLeader(b, 5*time.Second, n)
	ctx := context.Background()

	// Each proposer owns its tasks, so that batches never conflict; it
	// tracks their versions from the index Propose returns.
	owned := make([][]*typesv1.Task, proposers)
	for p := range owned {
		batch := store.NewBatch(time.Now())
		for i := range size {
			batch.CreateTask(mkTask(fmt.Sprintf("p%d-t%d", p, i), "svc", uint64(i+1)))
		}
		if _, err := n.Propose(ctx, batch.Proto()); err != nil {
			b.Fatal(err)
		}
		s.View(func(tx store.ReadTx) {
			for i := range size {
				owned[p] = append(owned[p], store.GetTask(tx, fmt.Sprintf("p%d-t%d", p, i)))
			}
		})
	}

	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, proposers)
	b.ResetTimer()
	start := time.Now()
	for p := range proposers {
		wg.Add(1)
		go func(tasks []*typesv1.Task) {
			defer wg.Done()
			for round := 0; next.Add(1) <= int64(b.N); round++ {
				now := time.Now()
				batch := store.NewBatch(now)
				for _, t := range tasks {
					t.Status = &typesv1.TaskStatus{
						State:     typesv1.TaskState(2 + round%5), // ASSIGNED … RUNNING
						Timestamp: timestamppb.New(now),
						Message:   "status from agent",
					}
					batch.UpdateTask(t)
				}
				idx, err := n.Propose(ctx, batch.Proto())
				if err != nil {
					errs <- err
					return
				}
				for _, t := range tasks {
					t.Meta.Version = idx
				}
			}
		}(owned[p])
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	batches := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(batches, "batches/s")
	b.ReportMetric(batches*float64(size), "updates/s")
}
