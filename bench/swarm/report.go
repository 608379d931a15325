package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/cgroups"
)

// raftBench runs manager/raftnode's BenchmarkProposeTaskStatus and returns
// its result lines.
func raftBench(ctx context.Context) ([]string, error) {
	args := []string{"test", "-run", "^$", "-bench", "BenchmarkProposeTaskStatus", "-benchtime", "2s", "./manager/raftnode/"}
	fmt.Fprintf(os.Stderr, "bench: go %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "go", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	var lines []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "Benchmark") && strings.Contains(l, "updates/s") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("go %s printed no updates/s line:\n%s", strings.Join(args, " "), out.String())
	}
	return lines, nil
}

// Docker 20.10 swarm's figures and the goals, from the issue.
type reference struct {
	docker time.Duration // 0: no figure
	goal   time.Duration // 0: no goal
}

var (
	refDeploy = map[int]reference{
		5:   {2700 * time.Millisecond, 500 * time.Millisecond},
		50:  {17 * time.Second, 0},
		150: {46 * time.Second, 8 * time.Second},
	}
	refSeedRm = reference{14 * time.Second, time.Second}
	refKill   = reference{1100 * time.Millisecond, 300 * time.Millisecond}
)

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pick[T any](rs []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func pickCPU[T any](rs []T, f func(T) cpuUse) []cpuUse {
	out := make([]cpuUse, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	s := d.Seconds()
	switch {
	case s >= 10:
		return fmt.Sprintf("%.1fs", s)
	case s >= 1:
		return fmt.Sprintf("%.2fs", s)
	default:
		return fmt.Sprintf("%.0fms", s*1000)
	}
}

func printReport(w io.Writer, b *bench, r *results) {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	mode := cgroups.Mode()
	if mode == "" {
		mode = "unknown"
	}
	row := func(label, med, lo, hi, docker, ratio, goal, met string) {
		l := fmt.Sprintf("%-40s %8s %8s %8s %13s %12s %8s %8s", label, med, lo, hi, docker, ratio, goal, met)
		fmt.Fprintln(w, strings.TrimRight(l, " "))
	}
	line := func(label string, ds []time.Duration, ref reference) {
		m := median(ds)
		docker, ratio, goal, met := "—", "—", "—", "—"
		if ref.docker > 0 {
			docker = fmtDur(ref.docker)
			ratio = fmt.Sprintf("%.3f", m.Seconds()/ref.docker.Seconds())
		}
		if ref.goal > 0 {
			goal = "< " + fmtDur(ref.goal)
			met = "met"
			if m >= ref.goal {
				met = "NOT met"
			}
		}
		row(label, fmtDur(m), fmtDur(slices.Min(ds)), fmtDur(slices.Max(ds)), docker, ratio, goal, met)
	}
	total := func(d deployRun) time.Duration { return d.total }
	rmTotal := func(d rmRun) time.Duration { return d.total }

	row(fmt.Sprintf("swarm benchmark (%d runs, %d CPUs)", b.cfg.runs, runtime.NumCPU()), "median", "min", "max", "Docker 20.10", "ours/Docker", "goal", "")
	for _, n := range deploySizes {
		line(fmt.Sprintf("stack deploy → all RUNNING, %d replicas", n), pick(r.deploy[n], total), refDeploy[n])
	}
	line("stack rm → nothing running, seed stack", pick(r.seedRm, rmTotal), refSeedRm)
	line("stack rm → nothing running, 150 replicas", pick(r.rm[150], rmTotal), reference{})
	line("killed task → replacement RUNNING", pick(r.kill, func(k killRun) time.Duration { return k.total }), refKill)

	fmt.Fprintln(w)
	fmt.Fprintf(w, "setup: shoal %s, kernel %s, cgroup %s; one node, manager started as `swarm init` does, with --cgroup-parent %s;\n",
		b.managerVersion, unix.ByteSliceToString(uts.Release[:]), mode, b.cgroupParent)
	fmt.Fprintf(w, "  image: the helper image (testutil.HelperRootfs) imported with CMD /bin/helper serve 80; APIs polled every %v;\n", pollInterval)
	fmt.Fprintf(w, "  the machine was %.0f%% busy in the 2 s before the first measurement (the idle manager used %.2fs of CPU)", 100*b.idle.busy, b.idle.manager.Seconds())
	if b.idle.busy > 0.2 {
		fmt.Fprint(w, " (other work competed with the benchmark: its figures are pessimistic)")
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w, "medians, since the CLI started:")
	cpu := func(us []cpuUse) string {
		var mgr []time.Duration
		var busy []float64
		for _, u := range us {
			mgr = append(mgr, u.manager)
			busy = append(busy, u.busy)
		}
		slices.Sort(busy)
		return fmt.Sprintf("manager CPU %.2fs, machine busy %.0f%%", median(mgr).Seconds(), 100*busy[len(busy)/2])
	}
	for _, n := range deploySizes {
		ds := r.deploy[n]
		fmt.Fprintf(w, "  deploy %-5s CLI exited %s, %d tasks created %s, all assigned %s, first RUNNING %s, all RUNNING %s (%s)\n", fmt.Sprintf("%d:", n),
			fmtDur(median(pick(ds, func(d deployRun) time.Duration { return d.cli }))), n,
			fmtDur(median(pick(ds, func(d deployRun) time.Duration { return d.created }))),
			fmtDur(median(pick(ds, func(d deployRun) time.Duration { return d.assigned }))),
			fmtDur(median(pick(ds, func(d deployRun) time.Duration { return d.firstRunning }))),
			fmtDur(median(pick(ds, total))),
			cpu(pickCPU(ds, func(d deployRun) cpuUse { return d.cpu })))
		var delays []time.Duration
		for _, d := range ds {
			delays = append(delays, d.reportDelay...)
		}
		fmt.Fprintf(w, "              containers started (RUNNING timestamps) from %s to %s; RUNNING status to ListTasks: median %s, max %s\n",
			fmtDur(median(pick(ds, func(d deployRun) time.Duration { return d.firstStarted }))),
			fmtDur(median(pick(ds, func(d deployRun) time.Duration { return d.lastStarted }))),
			fmtDur(median(delays)), fmtDur(slices.Max(delays)))
	}
	fmt.Fprintf(w, "  deploy seed: all RUNNING %s (%s)\n", fmtDur(median(pick(r.seedDeploy, total))),
		cpu(pickCPU(r.seedDeploy, func(d deployRun) cpuUse { return d.cpu })))
	rmLine := func(label string, rs []rmRun) {
		fmt.Fprintf(w, "  rm %-8s CLI exited %s, no container running %s, no task ≤ RUNNING %s (%s);\n", label,
			fmtDur(median(pick(rs, func(x rmRun) time.Duration { return x.cli }))),
			fmtDur(median(pick(rs, func(x rmRun) time.Duration { return x.containersGone }))),
			fmtDur(median(pick(rs, func(x rmRun) time.Duration { return x.tasksEnded }))),
			cpu(pickCPU(rs, func(x rmRun) cpuUse { return x.cpu })))
		fmt.Fprintf(w, "              untimed: network namespaces and links released %s, every container and task removed %s\n",
			fmtDur(median(pick(rs, func(x rmRun) time.Duration { return x.netReleased }))),
			fmtDur(median(pick(rs, func(x rmRun) time.Duration { return x.clean }))))
	}
	for _, n := range deploySizes {
		rmLine(fmt.Sprintf("%d:", n), r.rm[n])
	}
	rmLine("seed:", r.seedRm)
	fmt.Fprintf(w, "  kill: old task past RUNNING %s, new task in the slot created %s, RUNNING %s\n",
		fmtDur(median(pick(r.kill, func(k killRun) time.Duration { return k.failed }))),
		fmtDur(median(pick(r.kill, func(k killRun) time.Duration { return k.created }))),
		fmtDur(median(pick(r.kill, func(k killRun) time.Duration { return k.total }))))
	fmt.Fprintf(w, "  kill: %s; restart_policy condition any, delay 0s.\n", r.killWhat)
	if len(r.raft) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "FSM apply throughput (go test -run '^$' -bench BenchmarkProposeTaskStatus -benchtime 2s ./manager/raftnode/):")
		for _, l := range r.raft {
			fmt.Fprintln(w, "  "+l)
		}
	}
}
