package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/deploy"
	"github.com/shoal-dev/shoal/internal/testcluster"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Roles of the cluster's nodes: n1-n3 managers, n4-n5 workers.
const (
	numManagers = 3
	numWorkers  = 2
)

type results struct {
	initReady time.Duration            // n1's --init until n1 Ready
	joins     map[bool][]time.Duration // by manager: --join until Ready in node ls
	failovers []failoverRun
	downs     []downRun
	deploys   []deployRun
}

// failoverRun is one kill -9 of the leader; durations since the SIGKILL.
type failoverRun struct {
	killed, leader string        // node names: the killed leader, the new one
	leaderSeen     time.Duration // a survivor's node ls shows another manager as Leader
	writeOK        time.Duration // a `stack deploy` through a survivor succeeded
	failedWrites   int           // attempts that failed before
	total          time.Duration // both
	down           time.Duration // untimed: the killed manager Down in node ls
	back           time.Duration // untimed: restart of the killed manager until Ready (Reachable) again
}

// downRun is one kill -9 of a worker's daemon; durations since the
// SIGKILL.
type downRun struct {
	worker   string
	onVictim int           // replicas that ran on it
	down     time.Duration // node ls shows it Down
	replaced time.Duration // all replicas run on the other nodes
	stale    time.Duration // untimed: restart of its daemon until its stale containers stopped
}

// deployRun is one deploy of -replicas replicas and its removal;
// durations since just before the CLI started.
type deployRun struct {
	cli, first, all time.Duration // CLI exited; a container, all running
	perNode         []int
	rmCLI, rmAll    time.Duration // CLI exited; nothing running
}

func (b *bench) managers() []*member { return b.members[:numManagers] }
func (b *bench) workers() []*member  { return b.members[numManagers:] }

// measure builds the cluster and runs every benchmark. It runs on tb's
// body goroutine: the harness's Fatal ends it.
func (b *bench) measure(ctx context.Context) error {
	c := testcluster.New(b.t, testcluster.Options{Nodes: numManagers + numWorkers, StopTimeout: 10 * time.Second})
	b.cluster = c
	b.cgroupPrefix = cgroupPrefix(c.Prefix())
	for i, n := range c.Nodes() {
		b.members = append(b.members, &member{b: b, node: n, manager: i < numManagers})
	}
	logf("cluster: %d hosts on bridge %s, %s; cgroup parents %s<node>", len(b.members), c.Bridge(), c.Subnet(), b.cgroupPrefix)
	b.res = &results{joins: map[bool][]time.Duration{}}
	if err := b.joinAll(ctx); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	for _, m := range b.members {
		if _, err := m.shoal(ctx, "image", "import", "--change", `CMD ["/bin/helper", "serve", "80"]`, "--change", "ENV PATH=/bin", b.tarball, imageRef); err != nil {
			return fmt.Errorf("import the helper image: %w", err)
		}
	}
	b.busyStart = sampleCPU()
	for i := range b.cfg.failovers {
		r, err := b.failover(ctx, i)
		if err != nil {
			return fmt.Errorf("failover %d: %w", i+1, err)
		}
		b.res.failovers = append(b.res.failovers, r)
	}
	for i := range b.cfg.nodeDowns {
		r, err := b.nodeDown(ctx, i)
		if err != nil {
			return fmt.Errorf("node down %d: %w", i+1, err)
		}
		b.res.downs = append(b.res.downs, r)
	}
	for i := range b.cfg.deploys {
		r, err := b.deployConverge(ctx, i)
		if err != nil {
			return fmt.Errorf("deploy %d replicas: %w", b.cfg.replicas, err)
		}
		b.res.deploys = append(b.res.deploys, r)
	}
	b.busyEnd = sampleCPU()
	return nil
}

// ---------------------------------------------------------------- joins

// joinAll starts the swarm on n1, joins the other managers and the
// workers one at a time, each timed, then makes the last manager and the
// last worker leave and join again until -joins joins of each role are
// timed.
func (b *bench) joinAll(ctx context.Context) error {
	first := b.members[0]
	start := time.Now()
	first.start("--init")
	at, err := b.waitReady(ctx, first, first)
	if err != nil {
		return err
	}
	b.res.initReady = at.Sub(start)
	logf("n1: --init → Ready in %s", fmtDur(b.res.initReady))
	if c, err := first.client(); err == nil {
		if info, err := c.Info(ctx, &controlv1.InfoRequest{}); err == nil {
			b.version = info.GetVersion()
		}
	}
	for _, role := range []string{"manager", "worker"} {
		out, err := first.shoal(ctx, "swarm", "join-token", "-q", role)
		if err != nil {
			return err
		}
		b.tokens[role] = strings.TrimSpace(out)
	}
	for _, m := range b.members[1:] {
		if err := b.timedJoin(ctx, m); err != nil {
			return err
		}
	}
	again := []*member{b.managers()[numManagers-1], b.workers()[numWorkers-1]}
	for _, m := range again {
		for len(b.res.joins[m.manager]) < b.cfg.joins {
			if err := b.leave(ctx, m); err != nil {
				return err
			}
			if err := b.timedJoin(ctx, m); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) timedJoin(ctx context.Context, m *member) error {
	role := "worker"
	if m.manager {
		role = "manager"
	}
	first := b.members[0]
	start := time.Now()
	m.start("--join", first.addr(), "--token", b.tokens[role])
	at, err := b.waitReady(ctx, first, m)
	if err != nil {
		return err
	}
	d := at.Sub(start)
	b.res.joins[m.manager] = append(b.res.joins[m.manager], d)
	logf("%s: --join → Ready in node ls in %s", m, fmtDur(d))
	return nil
}

// waitReady waits until m has saved its node id and obs's node list
// shows that node Ready, and returns when it did.
func (b *bench) waitReady(ctx context.Context, obs, m *member) (time.Time, error) {
	m.id = ""
	return waitFor(ctx, m.String()+" Ready in node ls", b.cfg.timeout, func() (bool, error) {
		if err := errors.Join(m.exited(), obs.exited()); err != nil {
			return false, err
		}
		if m.id == "" {
			if m.id = m.readID(); m.id == "" {
				return false, nil
			}
		}
		ns, err := obs.nodes(ctx)
		return err == nil && nodeState(ns, m.id) == ready, nil
	})
}

// leave makes m leave the swarm (`shoal swarm leave`), removes its node
// from the list (a manager is demoted first, as `node rm` asks) and
// empties its data dir for a fresh join. Untimed.
func (b *bench) leave(ctx context.Context, m *member) error {
	first := b.members[0]
	old := m.id
	m.stopped = true
	if _, err := m.shoal(ctx, "swarm", "leave"); err != nil {
		return err
	}
	select {
	case <-m.proc.Done():
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: shoal-manager still runs 30 s after swarm leave", m)
	case <-ctx.Done():
		return ctx.Err()
	}
	if m.manager {
		// `node rm` refuses a manager: demote it first, and give the
		// role change a few seconds.
		if _, err := first.shoal(ctx, "node", "demote", old); err != nil {
			vlogf("%v", err)
		} else {
			_, _ = waitFor(ctx, "the departed manager demoted", 5*time.Second, func() (bool, error) {
				ns, err := first.nodes(ctx)
				if err != nil {
					return false, nil
				}
				for _, n := range ns {
					if n.GetId() == old {
						return n.GetRole() == typesv1.NodeRole_NODE_ROLE_WORKER, nil
					}
				}
				return true, nil
			})
		}
	}
	// Best effort: a node left in the list is Down and not a member
	// the benchmark waits for.
	if _, err := first.shoal(ctx, "node", "rm", "--force", old); err != nil {
		logf("the departed node stays in the list: %v", err)
	}
	if err := os.RemoveAll(m.node.DataDir); err != nil {
		return err
	}
	return os.MkdirAll(m.node.DataDir, 0o755)
}

// ---------------------------------------------------------------- failover

// stable waits until every daemon is Ready in every manager's node list
// and all managers name the same Leader, and returns the leader.
func (b *bench) stable(ctx context.Context) (*member, error) {
	var leader string
	_, err := waitFor(ctx, "every node Ready and one Leader", b.cfg.timeout, func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		leader = ""
		for _, m := range b.managers() {
			ns, err := m.nodes(ctx)
			if err != nil {
				return false, nil
			}
			l := leaderOf(ns)
			if l == "" || (leader != "" && l != leader) {
				return false, nil
			}
			leader = l
			for _, x := range b.members {
				if nodeState(ns, x.id) != ready {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return b.byID(leader)
}

func (b *bench) byID(id string) (*member, error) {
	for _, m := range b.members {
		if m.id == id {
			return m, nil
		}
	}
	return nil, fmt.Errorf("node %s is none of the benchmark's", id)
}

// failover kills the leader with SIGKILL and times until a survivor's
// node list shows another manager as Leader and a `stack deploy` through
// a survivor succeeds; then it restarts the killed manager and waits
// until it is back.
func (b *bench) failover(ctx context.Context, i int) (failoverRun, error) {
	var r failoverRun
	lead, err := b.stable(ctx)
	if err != nil {
		return r, err
	}
	var survivors []*member
	for _, m := range b.managers() {
		if m != lead {
			survivors = append(survivors, m)
		}
	}
	compose := filepath.Join(b.tmp, "probe.yml")
	if err := os.WriteFile(compose, []byte(composeProbe), 0o644); err != nil {
		return r, err
	}
	stack := fmt.Sprintf("probe%d", i+1)
	r.killed = lead.node.Name

	start := time.Now()
	lead.kill()
	var wg sync.WaitGroup
	var leaderErr, writeErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, leaderErr = waitFor(ctx, "a new Leader in a survivor's node ls", b.cfg.timeout, func() (bool, error) {
			for _, m := range survivors {
				if ns, err := m.nodes(ctx); err == nil {
					if l := leaderOf(ns); l != "" && l != lead.id {
						r.leaderSeen = time.Since(start)
						if nl, err := b.byID(l); err == nil {
							r.leader = nl.node.Name
						}
						return true, nil
					}
				}
			}
			return false, nil
		})
	}()
	go func() {
		defer wg.Done()
		deadline := start.Add(b.cfg.timeout)
		for {
			_, err := survivors[0].shoal(ctx, "stack", "deploy", "-c", compose, stack)
			if err == nil {
				r.writeOK = time.Since(start)
				return
			}
			r.failedWrites++
			if ctx.Err() != nil || time.Now().After(deadline) {
				writeErr = fmt.Errorf("no write succeeded within %v of the kill; the last: %w", b.cfg.timeout, err)
				return
			}
			vlogf("write after the kill: %v", err)
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	wg.Wait()
	if err := errors.Join(leaderErr, writeErr); err != nil {
		return r, err
	}
	r.total = max(r.leaderSeen, r.writeOK)
	logf("failover %d/%d: killed leader %s → %s Leader in node ls %s, stack deploy through %s ok %s (%d failed before) → %s",
		i+1, b.cfg.failovers, r.killed, r.leader, fmtDur(r.leaderSeen), survivors[0].node.Name, fmtDur(r.writeOK), r.failedWrites, fmtDur(r.total))

	// The store still holds the killed manager Ready until the new
	// leader's dispatcher misses its heartbeats: wait for Down, so that
	// Ready after the restart is the restarted daemon's.
	at, err := waitFor(ctx, "the killed manager Down", b.cfg.timeout, func() (bool, error) {
		ns, err := survivors[0].nodes(ctx)
		return err == nil && nodeState(ns, lead.id) == down, nil
	})
	if err != nil {
		return r, err
	}
	r.down = at.Sub(start)
	// Back on its data dir, as after a crash.
	restart := time.Now()
	lead.start()
	at, err = b.waitReady(ctx, survivors[0], lead)
	if err != nil {
		return r, err
	}
	r.back = at.Sub(restart)
	return r, nil
}

// composeProbe is the failover's write: a stack of one service with no
// replicas, so that it needs no image and starts nothing.
const composeProbe = `services:
  probe:
    image: shoal-bench/none:latest
    deploy:
      replicas: 0
`

// ---------------------------------------------------------------- node down

// nodeDown deploys -down-replicas replicas with Docker's default restart
// policy, kills a worker's daemon with SIGKILL (its containers keep
// running, as after a crash of the daemon alone) and times until the node
// is Down in node ls and until all replicas run on the other
// nodes. Then it restarts the daemon, waits until it has stopped its
// stale containers and removes the stack.
func (b *bench) nodeDown(ctx context.Context, i int) (downRun, error) {
	var r downRun
	n := b.cfg.downReps
	lead, err := b.stable(ctx)
	if err != nil {
		return r, err
	}
	stack := fmt.Sprintf("down%d", i+1)
	service := stack + "_web"
	compose := filepath.Join(b.tmp, stack+".yml")
	if err := os.WriteFile(compose, []byte(composeDefault(n)), 0o644); err != nil {
		return r, err
	}
	if _, err := lead.shoal(ctx, "stack", "deploy", "-c", compose, stack); err != nil {
		return r, err
	}
	running, err := waitFor(ctx, fmt.Sprintf("%d replicas of %s running", n, service), b.cfg.timeout, func() (bool, error) {
		return b.count(service, nil) == n, b.alive()
	})
	if err != nil {
		return r, err
	}
	// A task replaced because its node is lost waits out the restart
	// delay counted from its last status, RUNNING here (deploy's
	// restart classification): a task that has run longer is replaced
	// at once. The kill comes once every replica has run that long, as a
	// crash in steady state would find them.
	select {
	case <-time.After(time.Until(running.Add(deploy.DefaultRestartDelay + 500*time.Millisecond))):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	victim := b.workers()[i%numWorkers]
	if victim.containers(service) == 0 {
		victim = b.workers()[(i+1)%numWorkers]
	}
	r.worker, r.onVictim = victim.node.Name, victim.containers(service)

	start := time.Now()
	victim.kill()
	_, err = waitFor(ctx, fmt.Sprintf("%s Down and %d replicas running on the other nodes", victim.node.Name, n), b.cfg.timeout, func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		if r.down == 0 {
			if ns, err := lead.nodes(ctx); err == nil && nodeState(ns, victim.id) == down {
				r.down = time.Since(start)
			}
		}
		if r.replaced == 0 && b.count(service, victim) == n {
			r.replaced = time.Since(start)
		}
		return r.down > 0 && r.replaced > 0, nil
	})
	if err != nil {
		return r, err
	}
	logf("node down %d/%d: killed %s's daemon (%d of %d replicas on it) → Down in node ls %s, %d replicas running on the other nodes %s",
		i+1, b.cfg.nodeDowns, r.worker, r.onVictim, n, fmtDur(r.down), n, fmtDur(r.replaced))

	restart := time.Now()
	victim.start()
	at, err := waitFor(ctx, victim.node.Name+" back and its stale containers stopped", b.cfg.timeout, func() (bool, error) {
		if err := b.alive(); err != nil {
			return false, err
		}
		ns, err := lead.nodes(ctx)
		return err == nil && nodeState(ns, victim.id) == ready && victim.containers(service) == 0, nil
	})
	if err != nil {
		return r, err
	}
	r.stale = at.Sub(restart)
	if _, err := lead.shoal(ctx, "stack", "rm", stack); err != nil {
		return r, err
	}
	_, err = waitFor(ctx, "nothing of "+stack+" running", b.cfg.timeout, func() (bool, error) {
		return b.count(service, nil) == 0, b.alive()
	})
	return r, err
}

// count sums the running containers of service over the nodes, except
// one.
func (b *bench) count(service string, except *member) int {
	n := 0
	for _, m := range b.members {
		if m != except {
			n += m.containers(service)
		}
	}
	return n
}

// composeDefault is one service of n replicas of the helper image with
// Docker's default restart policy (condition any, delay 5 s).
func composeDefault(n int) string {
	return fmt.Sprintf(`services:
  web:
    image: %s
    deploy:
      replicas: %d
`, imageRef, n)
}

// composeOnFailure is bench/swarm's deploy stack: n replicas, restart on
// failure.
func composeOnFailure(n int) string {
	return fmt.Sprintf(`services:
  web:
    image: %s
    deploy:
      replicas: %d
      restart_policy:
        condition: on-failure
`, imageRef, n)
}

// ---------------------------------------------------------------- deploy

// deployConverge times `shoal stack deploy` of -replicas replicas until
// they all run (on all five nodes), then `shoal stack rm` until none runs.
func (b *bench) deployConverge(ctx context.Context, i int) (deployRun, error) {
	var r deployRun
	lead, err := b.stable(ctx)
	if err != nil {
		return r, err
	}
	n := b.cfg.replicas
	stack := fmt.Sprintf("big%d", i+1)
	service := stack + "_web"
	compose := filepath.Join(b.tmp, stack+".yml")
	if err := os.WriteFile(compose, []byte(composeOnFailure(n)), 0o644); err != nil {
		return r, err
	}

	start := time.Now()
	cli := lead.shoalAsync(ctx, "stack", "deploy", "-c", compose, stack)
	_, err = waitFor(ctx, fmt.Sprintf("%d replicas of %s running", n, service), b.cfg.timeout, func() (bool, error) {
		if err := cliDone(cli, &r.cli, start); err != nil {
			return false, err
		}
		c := b.count(service, nil)
		if r.first == 0 && c > 0 {
			r.first = time.Since(start)
		}
		if r.all == 0 && c >= n {
			r.all = time.Since(start)
		}
		return r.all > 0 && r.cli > 0, b.alive()
	})
	if err != nil {
		return r, err
	}
	for _, m := range b.members {
		r.perNode = append(r.perNode, m.containers(service))
	}
	logf("deploy %d/%d: stack deploy %d replicas → all running %s (CLI exited %s, first running %s; per node %v)",
		i+1, b.cfg.deploys, n, fmtDur(r.all), fmtDur(r.cli), fmtDur(r.first), r.perNode)

	start = time.Now()
	cli = lead.shoalAsync(ctx, "stack", "rm", stack)
	_, err = waitFor(ctx, "nothing of "+stack+" running", b.cfg.timeout, func() (bool, error) {
		if err := cliDone(cli, &r.rmCLI, start); err != nil {
			return false, err
		}
		if r.rmAll == 0 && b.count(service, nil) == 0 {
			r.rmAll = time.Since(start)
		}
		return r.rmAll > 0 && r.rmCLI > 0, b.alive()
	})
	if err != nil {
		return r, err
	}
	logf("deploy %d/%d: stack rm → nothing running %s (CLI exited %s)", i+1, b.cfg.deploys, fmtDur(r.rmAll), fmtDur(r.rmCLI))
	return r, nil
}

// shoalAsync starts the CLI and returns a channel that yields its error
// once it has exited.
func (m *member) shoalAsync(ctx context.Context, args ...string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := m.shoal(ctx, args...)
		done <- err
	}()
	return done
}

// cliDone sets *at to the time since start once the CLI has exited, and
// returns its error.
func cliDone(done <-chan error, at *time.Duration, start time.Time) error {
	if *at > 0 {
		return nil
	}
	select {
	case err := <-done:
		*at = time.Since(start)
		return err
	default:
		return nil
	}
}
