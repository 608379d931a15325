// Command swarm measures a one-node shoal swarm run from the real binaries
// and prints its figures beside Docker 20.10 swarm's from the issue:
//
//   - stack deploy → all replicas RUNNING, for 5, 50 and 150 replicas:
//     from just before `shoal stack deploy` starts until ListTasks shows N
//     tasks RUNNING with desired state RUNNING (polled every 10 ms);
//   - stack rm → nothing running, for the seed stack (5 replicas with
//     cpus 0.1, memory 50M, on-failure) and for 150 replicas: from just
//     before `shoal stack rm` until the node API lists no running container
//     and no task of the stack is in a state up to RUNNING;
//   - a killed task's replacement RUNNING (restart_policy condition any,
//     delay 0s): from the SIGKILL of one task's command until a new task
//     in its slot is RUNNING;
//   - the Raft FSM's apply throughput, from manager/raftnode's
//     BenchmarkProposeTaskStatus (go test -bench).
//
// Usage, from the repository root, as root, after `make build`:
//
//	go run ./bench/swarm -bin bin [-runs 3] [-log-level info] [-keep-log FILE] [-raft-bench=true] [-timeout 3m] [-share-host]
//
// It starts shoal-manager --init itself, as `shoal swarm init` would, with a
// cgroup parent of its own (shoal-bench-<rand>); everything it makes (temp
// dir, run dir under /run, stacks, containers, cgroups, the manager) is
// removed at the end, also on error and on Ctrl-C, and then checked. It
// refuses to run beside another shoal-manager, whose networks the two
// managers would break (they share link names and nftables table).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type config struct {
	bin       string
	runs      int
	logLevel  string
	keepLog   string
	raftBench bool
	timeout   time.Duration
	// shareHost runs the benchmark even when another shoal-manager runs
	// on the machine.
	shareHost bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin", "directory holding shoal, shoal-manager and shoal-init (`make build` makes bin/)")
	flag.IntVar(&cfg.runs, "runs", 3, "measured runs of each benchmark")
	flag.StringVar(&cfg.logLevel, "log-level", "info", "the manager's --log-level (debug shows where the time goes)")
	flag.StringVar(&cfg.keepLog, "keep-log", "", "copy the manager's log to this file before the temp dir is removed")
	flag.BoolVar(&cfg.raftBench, "raft-bench", true, "also run manager/raftnode's BenchmarkProposeTaskStatus (about 20 s)")
	flag.DurationVar(&cfg.timeout, "timeout", 3*time.Minute, "give up on a wait (all running, all gone) after this long")
	flag.BoolVar(&cfg.shareHost, "share-host", false, "run even if another shoal-manager runs on this machine (the two then break each other's networks)")
	flag.Parse()
	if cfg.runs < 1 || cfg.bin == "" || cfg.timeout <= 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

func run(cfg config) (code int) {
	// The handler stays installed until cleanup is over, so that a second
	// Ctrl-C does not cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root (namespaces, cgroups, mounts)")
		return 1
	}
	b := &bench{cfg: cfg}
	cleaned := false
	finish := func() {
		if cleaned {
			return
		}
		cleaned = true
		for _, p := range b.cleanup() {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", p)
			code = 1
		}
	}
	defer finish()
	fail := func(what string, err error) int {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; cleaning up")
		} else {
			fmt.Fprintf(os.Stderr, "bench: %s%v\n", what, err)
		}
		return 1
	}
	if err := b.setup(ctx); err != nil {
		return fail("setup: ", err)
	}
	res, err := b.measure(ctx)
	if err != nil {
		return fail("", err)
	}
	// The swarm goes before the Raft benchmark, so that the two do not
	// share the CPUs.
	fmt.Fprintln(os.Stderr, "bench: removing the swarm")
	finish()
	if code != 0 {
		return code
	}
	if cfg.raftBench {
		if res.raft, err = raftBench(ctx); err != nil {
			return fail("raft benchmark: ", err)
		}
	}
	printReport(os.Stdout, b, res)
	return 0
}
