// Package agent is a node's worker: it holds a session with a manager's
// dispatcher, runs the tasks assigned to the node through an
// exec.Executor, and reports their statuses back in batches.
//
// Tasks belong to the agent's lifetime, not to a session's: when the
// session drops, containers keep running and the next session's
// assignments reach the same task runners. When the agent stops,
// containers keep running too; the next agent adopts them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/agent/exec"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
)

// Defaults of Config and of the session.
const (
	DefaultStatusFlushInterval = 50 * time.Millisecond
	// DefaultHeartbeatPeriod is used until the manager names one.
	DefaultHeartbeatPeriod = 5 * time.Second
	// Reconnection backoff: doubles from min to max, and starts again
	// from min after a session that lasted longer than max, so that a
	// dispatcher that accepts sessions and then fails them at once is not
	// hammered. The max stays well under the dispatcher's grace (3
	// missed 1 s heartbeats): during a leader election every manager
	// refuses sessions for a second or two, and an agent backing off
	// longer would come back after its node was declared Down, and its
	// tasks moved for nothing.
	reconnectMin = 100 * time.Millisecond
	reconnectMax = time.Second
	// openTimeout bounds the wait for the dispatcher's first session
	// message; a manager that accepts the call and says nothing is as
	// good as gone.
	openTimeout = 30 * time.Second
)

// Config configures an Agent.
type Config struct {
	Executor exec.Executor
	// Dial connects to a manager's dispatcher and returns a client and a
	// function that closes the connection. The command wires TLS and
	// addresses; tests pass a bufconn client.
	Dial func(ctx context.Context) (dispatcherv1.DispatcherClient, func() error, error)
	// OnSession, when set, runs for each established session, with the
	// session's client and id, until the session ends (its ctx): a
	// worker follows the network view there.
	OnSession func(ctx context.Context, client dispatcherv1.DispatcherClient, sessionID string)
	// Explain, when set, turns a session's error into what the log says
	// (a refused certificate into its reason).
	Explain func(error) error
	// NodeID is the node's ID (later known from its certificate).
	NodeID string
	// Addr is the address the node advertises.
	Addr   string
	Logger *slog.Logger
	// StatusFlushInterval is how long status updates are collected before
	// they are sent in one UpdateTaskStatus call (default 50 ms).
	StatusFlushInterval time.Duration
}

// Agent runs a node's tasks for a manager.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	rep       *reporter
	ready     chan struct{}
	readyOnce sync.Once
}

// New makes an agent; Run starts it.
func New(cfg Config) *Agent {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StatusFlushInterval <= 0 {
		cfg.StatusFlushInterval = DefaultStatusFlushInterval
	}
	return &Agent{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "agent", "node.id", cfg.NodeID),
		rep:   newReporter(),
		ready: make(chan struct{}),
	}
}

// Ready is closed once the first session with a dispatcher is established.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Run holds sessions with the dispatcher, reconnecting with backoff (up
// to 5 s) when one ends, and runs the assigned tasks, until ctx ends; it
// then returns nil once its task runners have stopped. The containers are
// left running. It returns an error only for a Config it cannot run with.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.Executor == nil || a.cfg.Dial == nil {
		return errors.New("agent: Config needs an Executor and a Dial function")
	}
	w := newWorker(ctx, a.cfg.Executor, a.rep, a.log)
	defer w.wait()

	backoff := reconnectMin
	for {
		began := time.Now()
		established, err := a.session(ctx, w)
		if ctx.Err() != nil {
			a.log.Info("agent stopping")
			return nil
		}
		if established && time.Since(began) > reconnectMax {
			backoff = reconnectMin
		}
		if a.cfg.Explain != nil && err != nil {
			err = a.cfg.Explain(err)
		}
		a.log.Warn("session ended; reconnecting", "err", err, "after", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			a.log.Info("agent stopping")
			return nil
		}
		backoff = min(2*backoff, reconnectMax)
	}
}

// session runs one session: it registers, then heartbeats, follows the
// assignments and sends statuses until one of them fails or ctx ends.
// established says whether the dispatcher accepted the session.
func (a *Agent) session(ctx context.Context, w *worker) (established bool, err error) {
	client, closeConn, err := a.cfg.Dial(ctx)
	if err != nil {
		return false, fmt.Errorf("dial dispatcher: %w", err)
	}
	defer func() {
		if closeConn != nil {
			_ = closeConn()
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream, err := client.Session(ctx, &dispatcherv1.SessionRequest{
		Description: a.cfg.Executor.Describe(),
		NodeId:      a.cfg.NodeID,
		Addr:        a.cfg.Addr,
	})
	if err != nil {
		return false, fmt.Errorf("open session: %w", err)
	}
	timeout := time.AfterFunc(openTimeout, cancel)
	msg, err := stream.Recv()
	if !timeout.Stop() {
		return false, fmt.Errorf("open session: no answer from the dispatcher within %v", openTimeout)
	}
	if err != nil {
		return false, fmt.Errorf("open session: %w", err)
	}
	sid := msg.GetSessionId()
	log := a.log.With("session.id", sid)
	log.Info("session established", "managers", msg.GetManagers())
	a.readyOnce.Do(func() { close(a.ready) })
	if a.cfg.OnSession != nil {
		done := make(chan struct{})
		go func() { defer close(done); a.cfg.OnSession(ctx, client, sid) }()
		defer func() { cancel(); <-done }()
	}

	errc := make(chan error, 4)
	var wg sync.WaitGroup
	spawn := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("the dispatcher ended the stream")
				}
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	spawn("session", func() error {
		for {
			m, err := stream.Recv()
			if err != nil {
				return err
			}
			log.Debug("managers", "managers", m.GetManagers())
		}
	})
	spawn("heartbeat", func() error { return a.heartbeat(ctx, client, sid) })
	spawn("assignments", func() error {
		as, err := client.Assignments(ctx, &dispatcherv1.AssignmentsRequest{SessionId: sid})
		if err != nil {
			return err
		}
		for first := true; ; first = false {
			m, err := as.Recv()
			if err != nil {
				return err
			}
			log.Debug("assignments", "type", m.GetType(), "changes", len(m.GetChanges()))
			w.apply(m)
			// Statuses go out once the first (complete) set is applied,
			// so that those the previous session could not deliver are
			// known and the manager hears only of tasks it assigned.
			if first {
				spawn("status", func() error {
					return a.rep.run(ctx, client, sid, a.cfg.StatusFlushInterval)
				})
			}
		}
	})

	select {
	case err = <-errc:
	case <-ctx.Done():
		err = ctx.Err()
	}
	cancel()
	wg.Wait()
	return true, err
}

// heartbeat keeps the session alive at the period the manager asks for.
func (a *Agent) heartbeat(ctx context.Context, client dispatcherv1.DispatcherClient, sid string) error {
	period := DefaultHeartbeatPeriod
	for {
		hctx, cancel := context.WithTimeout(ctx, max(period, DefaultHeartbeatPeriod))
		resp, err := client.Heartbeat(hctx, &dispatcherv1.HeartbeatRequest{SessionId: sid})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if p := resp.GetPeriod().AsDuration(); p > 0 {
			period = p
		}
		t := time.NewTimer(period)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}
