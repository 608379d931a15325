// Command runtime measures shoal's container runtime side by side with runc
// (Debian's runc package) on the same root filesystem, and prints ratios:
//
//   - start → first output: a container running `helper echo hi`, from the
//     moment it is asked for until "hi" can be read (shoal: Create() until
//     the entry is in the container's log; runc: `runc run` launch until
//     "hi" arrives on its stdout pipe);
//   - start → exit of true: shoal Create+Start+Wait, runc `runc run` until it
//     exits (both include their own teardown of the ended container);
//   - memory per running container: RSS and PSS of the runtime's own
//     processes per container running `helper sleep inf` (shoal: the
//     container's shoal-init; runc leaves no process behind a detached
//     container).
//
// Runs of the two runtimes alternate (ABAB…) so that machine noise hits
// both alike. Usage, from the repository root, as root:
//
//	go run ./bench/runtime -shoal-init bin/shoal-init [-n 30] [-warmup 2] [-containers 20]
//
// Everything it makes (temp dirs, containers, cgroups named
// shoal-bench-<rand> and runc-bench-<rand>) is removed at the end, also on
// error and on Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

type config struct {
	initPath   string
	n          int
	warmup     int
	containers int
}

func main() {
	var cfg config
	flag.StringVar(&cfg.initPath, "shoal-init", "", "the shoal-init binary (`make build` makes bin/shoal-init); empty: build ./cmd/init into the temp dir")
	flag.IntVar(&cfg.n, "n", 30, "measured runs of each latency benchmark, per runtime")
	flag.IntVar(&cfg.warmup, "warmup", 2, "unmeasured runs of each latency benchmark first, per runtime")
	flag.IntVar(&cfg.containers, "containers", 20, "containers running at once in the memory benchmark, per runtime")
	flag.Parse()
	if cfg.n < 1 || cfg.containers < 1 || cfg.warmup < 0 || flag.NArg() > 0 {
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
	// The commands of detached runc containers are orphaned when runc
	// exits; as subreaper this program inherits them and reaps them once
	// deleted, instead of leaving zombies to the machine's init.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "bench: become subreaper:", err)
		return 1
	}
	runcPath, err := findRunc()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}

	b := &bench{cfg: cfg, runcPath: runcPath}
	defer func() {
		for _, p := range b.cleanup() {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", p)
			code = 1
		}
	}()
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
	printReport(os.Stdout, b, res)
	return 0
}
