package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/lb"
)

// rotationResult is how fast the rotation follows the agent's calls.
type rotationResult struct {
	// add: from SetBackends with a new task until that task serves its
	// first request.
	add []time.Duration
	// drainCall: how long Drain takes (it waits for dials in progress to
	// the task).
	drainCall []time.Duration
	// late counts requests on connections the client opened after Drain
	// returned that still reached the drained task (want 0); served counts
	// requests the drained task served during the trials, before Drain.
	late, served int64
	// connRate is the rate of new connections of the load, per second.
	connRate float64
}

// taskServer is an in-process HTTP task that records when requests come;
// each request carries the time its client started the connection (?t=).
type taskServer struct {
	srv  *http.Server
	addr string
	// first is when the first request arrived (UnixNano), 0 before.
	first atomic.Int64
	// drainedAt is when Drain returned (UnixNano), 0 before.
	drainedAt atomic.Int64
	late      atomic.Int64
	served    atomic.Int64
}

func startTask(ip string) (*taskServer, error) {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return nil, err
	}
	ts := &taskServer{addr: l.Addr().String()}
	ts.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		ts.first.CompareAndSwap(0, now)
		started, _ := strconv.ParseInt(r.URL.Query().Get("t"), 10, 64)
		if d := ts.drainedAt.Load(); d != 0 && started > d {
			ts.late.Add(1)
		} else {
			ts.served.Add(1)
		}
		w.Write(backendBody)
	})}
	go ts.srv.Serve(l)
	return ts, nil
}

// measureRotation publishes a port of its own on b with two steady tasks,
// runs clients that open a new connection per request (keep-alive
// connections would stay on their backend and never show a change), and
// adds then drains a new task, trials times.
func measureRotation(ctx context.Context, b *lb.Balancer, port uint16, trials, clients int) (rotationResult, error) {
	var res rotationResult
	if err := b.Publish(lb.PortConfig{Port: port, Protocol: "tcp", ListenAddr: "127.0.0.1"}); err != nil {
		return res, err
	}
	defer b.Unpublish(port, "tcp")
	var steady []lb.Backend
	for i := range 2 {
		ts, err := startTask(fmt.Sprintf("127.0.0.%d", 21+i))
		if err != nil {
			return res, err
		}
		defer ts.srv.Close()
		steady = append(steady, lb.Backend{TaskID: fmt.Sprintf("steady-%d", i), Addr: ts.addr})
	}
	b.SetBackends(port, "tcp", steady)

	url := "http://127.0.0.1:" + strconv.Itoa(int(port)) + "/?t="
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
				resp, err := c.Get(url + strconv.FormatInt(time.Now().UnixNano(), 10))
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
		ts, err := startTask("127.0.0.23")
		if err != nil {
			return res, err
		}
		// A new task id each time: a drained task never comes back, a
		// replacement is a new task.
		task := lb.Backend{TaskID: fmt.Sprintf("new-%d", i), Addr: ts.addr}
		start := time.Now()
		b.SetBackends(port, "tcp", append(append([]lb.Backend{}, steady...), task))
		for ts.first.Load() == 0 {
			if time.Since(start) > 5*time.Second {
				ts.srv.Close()
				return res, fmt.Errorf("trial %d: the new task got no request within 5s", i)
			}
			time.Sleep(50 * time.Microsecond)
		}
		res.add = append(res.add, time.Unix(0, ts.first.Load()).Sub(start))

		// Let it take its share (and have dials in flight), then drain.
		time.Sleep(20 * time.Millisecond)
		start = time.Now()
		b.Drain(task.TaskID)
		done := time.Now()
		ts.drainedAt.Store(done.UnixNano())
		res.drainCall = append(res.drainCall, done.Sub(start))
		// Requests in flight finish; a late connection would show by now.
		time.Sleep(30 * time.Millisecond)
		// The agent's next list no longer has the task.
		b.SetBackends(port, "tcp", steady)
		ts.srv.Close()
		res.late += ts.late.Load()
		res.served += ts.served.Load()
	}
	res.connRate = float64(conns.Load()) / time.Since(loadStart).Seconds()
	return res, nil
}
