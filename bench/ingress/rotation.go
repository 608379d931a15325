package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// rotationPath is one way the node changes a port's rotation: the kernel
// table (dnat.Manager.Sync) or the userspace balancer (lb.Balancer).
type rotationPath struct {
	name string // "kernel (dnat)", …
	url  string // what the clients request; "?t=<unix ns>" is appended
	// add puts the newcomer into the rotation beside the steady tasks.
	add func(newcomer rotationTask) error
	// remove takes it out; when remove returns, no new connection may
	// reach it.
	remove func(newcomer rotationTask) error
	// removeName is what remove calls, for the report.
	addName, removeName string
}

// rotationTask is a task of the rotation measurement: a listener on
// rotationPort in a task's namespace, served by this process, that
// records when requests come. Each request carries the time its client
// started the connection (?t=).
type rotationTask struct {
	id   string // a new id per trial: a removed task never comes back, a replacement is a new task
	addr string // ip:port
	*taskServer
}

// rotationPort is the task port of the rotation measurement, beside the
// task processes' taskPort in the same namespaces.
const rotationPort = 81

// rotationResult is how fast a rotation follows the node's calls.
type rotationResult struct {
	// add: from the add call until the newcomer serves its first
	// request; addCall: how long the call took.
	add, addCall []time.Duration
	// removeCall: how long the remove call took.
	removeCall []time.Duration
	// late counts requests on connections the client opened after remove
	// returned that still reached the removed task (want 0); served
	// counts requests the newcomers served before.
	late, served int64
	// connRate is the rate of new connections of the load, per second.
	connRate float64
}

// taskServer serves a rotation task and counts its requests.
type taskServer struct {
	srv *http.Server
	// first is when the first request arrived (UnixNano), 0 before.
	first atomic.Int64
	// removedAt is when remove returned (UnixNano), 0 before.
	removedAt atomic.Int64
	late      atomic.Int64
	served    atomic.Int64
}

// startRotationTask serves a rotation task on a listener made in the
// task's namespace.
func startRotationTask(t hostTask, id string) (rotationTask, error) {
	l, err := listenIn(t.ns, rotationPort)
	if err != nil {
		return rotationTask{}, fmt.Errorf("listen in %s: %w", t.name, err)
	}
	ts := &taskServer{}
	ts.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		ts.first.CompareAndSwap(0, now)
		started, _ := strconv.ParseInt(r.URL.Query().Get("t"), 10, 64)
		if d := ts.removedAt.Load(); d != 0 && started > d {
			ts.late.Add(1)
		} else {
			ts.served.Add(1)
		}
		w.Write(backendBody)
	})}
	go ts.srv.Serve(l)
	return rotationTask{id: id, addr: fmt.Sprintf("%s:%d", t.addr, rotationPort), taskServer: ts}, nil
}

// measureRotation runs clients that open a new connection per request
// (a keep-alive connection stays on its backend and would never show a
// change) against p, whose rotation already holds the steady tasks, and
// trials times adds a newcomer, in the namespace of task newcomerNs, and
// removes it again.
func measureRotation(ctx context.Context, p rotationPath, newcomerNs hostTask, trials, clients int) (rotationResult, error) {
	var res rotationResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var conns atomic.Int64
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(p.url + strconv.FormatInt(time.Now().UnixNano(), 10))
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				conns.Add(1)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	loadStart := time.Now()

	for i := range trials {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		task, err := startRotationTask(newcomerNs, fmt.Sprintf("new-%d", i))
		if err != nil {
			return res, err
		}
		start := time.Now()
		if err := p.add(task); err != nil {
			task.srv.Close()
			return res, fmt.Errorf("trial %d: %s: %w", i, p.addName, err)
		}
		res.addCall = append(res.addCall, time.Since(start))
		for task.first.Load() == 0 {
			if time.Since(start) > 5*time.Second {
				task.srv.Close()
				return res, fmt.Errorf("trial %d: the new task got no request within 5s", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		res.add = append(res.add, time.Unix(0, task.first.Load()).Sub(start))

		// Let it take its share (and have connections in flight), then
		// take it out.
		time.Sleep(20 * time.Millisecond)
		start = time.Now()
		if err := p.remove(task); err != nil {
			task.srv.Close()
			return res, fmt.Errorf("trial %d: %s: %w", i, p.removeName, err)
		}
		done := time.Now()
		task.removedAt.Store(done.UnixNano())
		res.removeCall = append(res.removeCall, done.Sub(start))
		// Requests in flight finish; a late connection would show by now.
		time.Sleep(30 * time.Millisecond)
		task.srv.Close()
		res.late += task.late.Load()
		res.served += task.served.Load()
	}
	res.connRate = float64(conns.Load()) / time.Since(loadStart).Seconds()
	return res, nil
}
