package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// pollInterval is how often the control and node APIs are asked during a
// timed wait: the figures are late by up to this much.
const pollInterval = 10 * time.Millisecond

// deploySizes are the replica counts of the deploy benchmark.
var deploySizes = []int{5, 50, 150}

const (
	stRunning = typesv1.TaskState_TASK_STATE_RUNNING
	stAssign  = typesv1.TaskState_TASK_STATE_ASSIGNED
)

// deployRun is one `stack deploy`; every duration is since just before the
// CLI started.
type deployRun struct {
	total        time.Duration // all N tasks RUNNING, desired RUNNING
	cli          time.Duration // the CLI exited
	created      time.Duration // N tasks in the store
	assigned     time.Duration // N tasks ASSIGNED or further
	firstRunning time.Duration // one task RUNNING
	cpu          cpuUse        // until all RUNNING
	// From the tasks' RUNNING status timestamps, which the agent sets when
	// the container has started: the first and the last start, and how
	// long each status took from there to ListTasks (the agent's and the
	// dispatcher's batching, Raft, the 10 ms poll).
	firstStarted, lastStarted time.Duration
	reportDelay               []time.Duration
}

// rmRun is one `stack rm`; durations since just before the CLI started.
type rmRun struct {
	total          time.Duration // both of the next two
	cli            time.Duration
	containersGone time.Duration // ListContainers(all=false) empty
	tasksEnded     time.Duration // no task of the stack at or below RUNNING
	clean          time.Duration // no container at all, no task of the stack, network released (not part of total)
	netReleased    time.Duration // no netns of a task and no link of the stack's networks left on the host
	cpu            cpuUse        // until total
}

// killRun is one killed task; durations since just before the kill.
type killRun struct {
	total   time.Duration // a new task in the slot RUNNING
	failed  time.Duration // the killed task seen past RUNNING
	created time.Duration // the new task seen in the store
}

type results struct {
	deploy     map[int][]deployRun // by replicas
	rm         map[int][]rmRun     // by replicas
	seedDeploy []deployRun
	seedRm     []rmRun
	kill       []killRun
	killWhat   string // what the kill benchmark kills
	raft       []string
}

func (b *bench) measure(ctx context.Context) (*results, error) {
	res := &results{deploy: map[int][]deployRun{}, rm: map[int][]rmRun{}}
	b.idle = idleUse(b.mgr.Process.Pid, 2*time.Second)
	if b.idle.busy > 0.2 {
		fmt.Fprintf(os.Stderr, "bench: warning: the machine was %.0f%% busy before the benchmark started (the idle manager: %.2fs of CPU in 2 s); other work competes with it\n",
			100*b.idle.busy, b.idle.manager.Seconds())
	}
	for i := range b.cfg.runs {
		for _, n := range deploySizes {
			name := fmt.Sprintf("r%dn%d", i+1, n)
			d, err := b.deploy(ctx, name, composeReplicas(n), n)
			if err != nil {
				return nil, fmt.Errorf("deploy %d replicas: %w", n, err)
			}
			res.deploy[n] = append(res.deploy[n], d)
			fmt.Fprintf(os.Stderr, "bench: run %d/%d: deploy %3d replicas → all running %s (CLI %s, created %s, assigned %s, first running %s; containers started %s…%s, status seen after median %s, max %s)\n",
				i+1, b.cfg.runs, n, fmtDur(d.total), fmtDur(d.cli), fmtDur(d.created), fmtDur(d.assigned), fmtDur(d.firstRunning),
				fmtDur(d.firstStarted), fmtDur(d.lastStarted), fmtDur(median(d.reportDelay)), fmtDur(slices.Max(d.reportDelay)))
			r, err := b.remove(ctx, name)
			if err != nil {
				return nil, fmt.Errorf("rm %d replicas: %w", n, err)
			}
			res.rm[n] = append(res.rm[n], r)
			fmt.Fprintf(os.Stderr, "bench: run %d/%d: rm %3d replicas → nothing running %s (CLI %s, containers gone %s, tasks ended %s; network released %s, all removed %s)\n",
				i+1, b.cfg.runs, n, fmtDur(r.total), fmtDur(r.cli), fmtDur(r.containersGone), fmtDur(r.tasksEnded), fmtDur(r.netReleased), fmtDur(r.clean))
		}
		name := fmt.Sprintf("r%dseed", i+1)
		d, err := b.deploy(ctx, name, composeSeed(b.seedPort), 5)
		if err != nil {
			return nil, fmt.Errorf("deploy the seed stack: %w", err)
		}
		res.seedDeploy = append(res.seedDeploy, d)
		r, err := b.remove(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("rm the seed stack: %w", err)
		}
		res.seedRm = append(res.seedRm, r)
		fmt.Fprintf(os.Stderr, "bench: run %d/%d: seed stack: deploy → all running %s; rm → nothing running %s (CLI %s, containers gone %s, tasks ended %s; network released %s, all removed %s)\n",
			i+1, b.cfg.runs, fmtDur(d.total), fmtDur(r.total), fmtDur(r.cli), fmtDur(r.containersGone), fmtDur(r.tasksEnded), fmtDur(r.netReleased), fmtDur(r.clean))
	}

	const name = "kill"
	if _, err := b.deploy(ctx, name, composeRestartAny(), 5); err != nil {
		return nil, fmt.Errorf("deploy the restart stack: %w", err)
	}
	for i := range b.cfg.runs {
		k, what, err := b.killOne(ctx, name, uint64(i%5+1))
		if err != nil {
			return nil, fmt.Errorf("kill a task: %w", err)
		}
		res.kill = append(res.kill, k)
		res.killWhat = what
		fmt.Fprintf(os.Stderr, "bench: run %d/%d: killed task → replacement running %s (old task failed %s, new task created %s)\n",
			i+1, b.cfg.runs, fmtDur(k.total), fmtDur(k.failed), fmtDur(k.created))
	}
	if _, err := b.remove(ctx, name); err != nil {
		return nil, fmt.Errorf("rm the restart stack: %w", err)
	}
	return res, nil
}

// ---------------------------------------------------------------- compose files

func composeReplicas(n int) string {
	return fmt.Sprintf(`services:
  web:
    image: %s
    deploy:
      replicas: %d
      restart_policy:
        condition: on-failure
`, imageRef, n)
}

// composeSeed is the seed stack (Docker's "get started" part 3) with the
// helper image and a free published port instead of 4000.
func composeSeed(port int) string {
	return fmt.Sprintf(`version: '3'
services:
  web:
    image: %s
    deploy:
      replicas: 5
      resources:
        limits:
          cpus: '0.1'
          memory: 50M
      restart_policy:
        condition: on-failure
    ports:
      - '%d:80'
    networks:
      - webnet
networks:
  webnet:
`, imageRef, port)
}

func composeRestartAny() string {
	return fmt.Sprintf(`services:
  web:
    image: %s
    deploy:
      replicas: 5
      restart_policy:
        condition: any
        delay: 0s
`, imageRef)
}

// ---------------------------------------------------------------- API calls

func (b *bench) stackTasks(ctx context.Context, stack string) ([]*typesv1.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := b.ctl.ListTasks(ctx, &controlv1.ListTasksRequest{Stack: stack})
	if err != nil {
		return nil, fmt.Errorf("ListTasks: %w", err)
	}
	return resp.GetTasks(), nil
}

func (b *bench) containers(ctx context.Context, all bool) ([]*nodev1.Container, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := b.node.ListContainers(ctx, &nodev1.ListContainersRequest{All: all})
	if err != nil {
		return nil, fmt.Errorf("ListContainers: %w", err)
	}
	return resp.GetContainers(), nil
}

// cli starts the CLI and returns a channel that yields its end once.
func (b *bench) cli(ctx context.Context, args ...string) (<-chan error, error) {
	cmd := b.shoalCmd(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("shoal %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		done <- err
	}()
	return done, nil
}

// poll calls step every pollInterval with the time since start until it
// reports done, ctx ends or the timeout passes.
func (b *bench) poll(ctx context.Context, what string, start time.Time, step func(since time.Duration) (bool, error)) error {
	deadline := start.Add(b.cfg.timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, err := step(time.Since(start))
		if err != nil || done {
			return err
		}
		if !b.managerRunning() {
			return fmt.Errorf("shoal-manager exited while waiting for %s; the end of its log:\n%s", what, tail(b.logPath, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", b.cfg.timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// ---------------------------------------------------------------- benchmarks

// deploy writes the compose file, then times `shoal stack deploy` until n
// tasks of the stack are RUNNING with desired state RUNNING.
func (b *bench) deploy(ctx context.Context, name, compose string, n int) (deployRun, error) {
	var r deployRun
	path := filepath.Join(b.tmp, name+".yml")
	if err := os.WriteFile(path, []byte(compose), 0o644); err != nil {
		return r, err
	}
	b.stacks[name] = true
	c0 := sampleCPU(b.mgr.Process.Pid)
	start := time.Now()
	cliDone, err := b.cli(ctx, "stack", "deploy", "-c", path, name)
	if err != nil {
		return r, err
	}
	seen := map[string]bool{}
	err = b.poll(ctx, fmt.Sprintf("%d tasks of %s running", n, name), start, func(since time.Duration) (bool, error) {
		select {
		case err := <-cliDone:
			if err != nil {
				return false, err
			}
			r.cli, cliDone = since, nil
		default:
		}
		if r.total == 0 {
			ts, err := b.stackTasks(ctx, name)
			if err != nil {
				return false, err
			}
			now := time.Now()
			at := now.Sub(start)
			var live, assigned, running int
			for _, t := range ts {
				if t.GetDesiredState() != stRunning {
					continue
				}
				live++
				st := t.GetStatus().GetState()
				if st >= stAssign {
					assigned++
				}
				if st == stRunning {
					running++
					if !seen[t.GetId()] {
						seen[t.GetId()] = true
						ts := t.GetStatus().GetTimestamp().AsTime()
						r.reportDelay = append(r.reportDelay, now.Sub(ts))
						started := ts.Sub(start)
						if r.firstStarted == 0 || started < r.firstStarted {
							r.firstStarted = started
						}
						r.lastStarted = max(r.lastStarted, started)
					}
				}
			}
			setOnce(&r.created, live >= n, at)
			setOnce(&r.assigned, assigned >= n, at)
			setOnce(&r.firstRunning, running > 0, at)
			if setOnce(&r.total, running >= n, at) {
				r.cpu = c0.until(sampleCPU(b.mgr.Process.Pid))
			}
		}
		return r.total > 0 && cliDone == nil, nil
	})
	if err != nil {
		return r, err
	}
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nets, err := b.ctl.ListNetworks(nctx, &controlv1.ListNetworksRequest{Stack: name})
	if err != nil {
		return r, fmt.Errorf("ListNetworks: %w", err)
	}
	for _, n := range nets.GetNetworks() {
		b.networks[name] = append(b.networks[name], n.GetId())
	}
	return r, nil
}

// setOnce sets *d to at the first time cond holds, and says whether it
// did now.
func setOnce(d *time.Duration, cond bool, at time.Duration) bool {
	if *d == 0 && cond {
		*d = at
		return true
	}
	return false
}

// remove times `shoal stack rm` until no container runs and no task of
// the stack is at or below RUNNING, then waits (untimed) until every
// container and task is gone, so that the next benchmark starts clean.
func (b *bench) remove(ctx context.Context, name string) (rmRun, error) {
	var r rmRun
	c0 := sampleCPU(b.mgr.Process.Pid)
	start := time.Now()
	cliDone, err := b.cli(ctx, "stack", "rm", name)
	if err != nil {
		return r, err
	}
	err = b.poll(ctx, "stack "+name+" to stop", start, func(since time.Duration) (bool, error) {
		select {
		case err := <-cliDone:
			if err != nil {
				return false, err
			}
			r.cli, cliDone = since, nil
		default:
		}
		if r.total == 0 {
			cs, err := b.containers(ctx, false)
			if err != nil {
				return false, err
			}
			setOnce(&r.containersGone, len(cs) == 0, time.Since(start))
			ts, err := b.stackTasks(ctx, name)
			if err != nil {
				return false, err
			}
			live := 0
			for _, t := range ts {
				if t.GetStatus().GetState() <= stRunning {
					live++
				}
			}
			setOnce(&r.tasksEnded, live == 0, time.Since(start))
			setOnce(&r.netReleased, b.networkReleased(name), time.Since(start))
			if r.containersGone > 0 && r.tasksEnded > 0 {
				r.total = max(r.containersGone, r.tasksEnded)
				r.cpu = c0.until(sampleCPU(b.mgr.Process.Pid))
			}
		}
		return r.total > 0 && cliDone == nil, nil
	})
	if err != nil {
		return r, err
	}
	delete(b.stacks, name)
	// The next benchmark must not pay for this one's teardown: wait until
	// the node holds nothing of the stack, its network included.
	err = b.poll(ctx, "every container, task and network link of "+name+" removed", start, func(since time.Duration) (bool, error) {
		setOnce(&r.netReleased, b.networkReleased(name), time.Since(start))
		cs, err := b.containers(ctx, true)
		if err != nil {
			return false, err
		}
		ts, err := b.stackTasks(ctx, name)
		if err != nil {
			return false, err
		}
		if len(cs) == 0 && len(ts) == 0 && r.netReleased > 0 {
			r.clean = time.Since(start)
			return true, nil
		}
		return false, nil
	})
	return r, err
}

// networkReleased says whether the host is rid of the stack's networks:
// no task's network namespace is left under the run dir (only one stack
// runs at a time) and no link carries one of its networks in its alias.
func (b *bench) networkReleased(stack string) bool {
	if ents, err := os.ReadDir(filepath.Join(b.runDir, "netns")); err == nil && len(ents) > 0 {
		return false
	}
	return len(linksOf(b.networks[stack])) == 0
}

// linksOf lists the host's links that shoal's network package made for
// one of the networks: it writes `shoal … net=<id> …` into their alias.
func linksOf(netIDs []string) []string {
	if len(netIDs) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range ents {
		alias, err := os.ReadFile(filepath.Join("/sys/class/net", e.Name(), "ifalias"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(alias))
		if len(f) == 0 || f[0] != "shoal" {
			continue
		}
		for _, id := range netIDs {
			if slices.Contains(f[1:], "net="+id) {
				out = append(out, e.Name())
				break
			}
		}
	}
	return out
}

// killOne SIGKILLs the command of the running task in slot and times
// until a new task in that slot is RUNNING. It returns what it killed.
func (b *bench) killOne(ctx context.Context, stack string, slot uint64) (killRun, string, error) {
	var r killRun
	// The previous kill's replacement may still be on its way.
	var victim *typesv1.Task
	err := b.poll(ctx, fmt.Sprintf("all tasks of %s running", stack), time.Now(), func(time.Duration) (bool, error) {
		ts, err := b.stackTasks(ctx, stack)
		if err != nil {
			return false, err
		}
		running := 0
		victim = nil
		for _, t := range ts {
			if t.GetDesiredState() == stRunning && t.GetStatus().GetState() == stRunning {
				running++
				if t.GetSlot() == slot {
					victim = t
				}
			}
		}
		return running == 5 && victim != nil, nil
	})
	if err != nil {
		return r, "", err
	}
	cid := victim.GetStatus().GetContainer().GetContainerId()
	if cid == "" {
		return r, "", fmt.Errorf("task %s is RUNNING without a container id in its status", victim.GetId())
	}
	initPid, err := b.containerPid(ctx, cid)
	if err != nil {
		return r, "", err
	}
	if a := argv0(initPid); a != "shoal-init" {
		return r, "", fmt.Errorf("container %s: State.Pid %d is %q, not shoal-init", cid[:12], initPid, a)
	}
	kids := children(initPid)
	if len(kids) != 1 {
		return r, "", fmt.Errorf("container %s: its init (pid %d) has children %v, want exactly the command", cid[:12], initPid, kids)
	}
	cmd := kids[0]
	what := fmt.Sprintf("SIGKILL to the container's command (`%s`, the child of its shoal-init, State.Pid)", cmdline(cmd))

	start := time.Now()
	if err := syscall.Kill(cmd, syscall.SIGKILL); err != nil {
		return r, "", fmt.Errorf("kill %d: %w", cmd, err)
	}
	err = b.poll(ctx, fmt.Sprintf("a new task in slot %d running", slot), start, func(time.Duration) (bool, error) {
		ts, err := b.stackTasks(ctx, stack)
		if err != nil {
			return false, err
		}
		at := time.Since(start)
		for _, t := range ts {
			if t.GetSlot() != slot {
				continue
			}
			if t.GetId() == victim.GetId() {
				setOnce(&r.failed, t.GetStatus().GetState() > stRunning, at)
				continue
			}
			if t.GetDesiredState() != stRunning {
				continue
			}
			setOnce(&r.created, true, at)
			setOnce(&r.total, t.GetStatus().GetState() == stRunning, at)
		}
		return r.total > 0, nil
	})
	return r, what, err
}

// containerPid is State.Pid of `container inspect`: the host pid of the
// container's init.
func (b *bench) containerPid(ctx context.Context, id string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := b.node.InspectContainer(ctx, &nodev1.InspectContainerRequest{Ref: id})
	if err != nil {
		return 0, fmt.Errorf("InspectContainer %s: %w", id, err)
	}
	var c struct {
		State struct {
			Pid int `json:"Pid"`
		} `json:"State"`
	}
	if err := json.Unmarshal(resp.GetJson(), &c); err != nil {
		return 0, fmt.Errorf("InspectContainer %s: %w", id, err)
	}
	if c.State.Pid <= 0 {
		return 0, errors.New("InspectContainer " + id + ": no State.Pid")
	}
	return c.State.Pid, nil
}

// children lists a process's children: /proc/PID/task/PID/children, or,
// on a kernel without it, every process whose parent is pid.
func children(pid int) []int {
	var out []int
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		for _, f := range strings.Fields(string(data)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
		return out
	}
	return pidsWhere(func(p int) bool {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return false
		}
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			return false
		}
		f := strings.Fields(string(st[i+1:]))
		return len(f) > 1 && f[1] == strconv.Itoa(pid)
	})
}
