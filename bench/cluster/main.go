// Command cluster measures a five-host shoal swarm run from the real
// binaries on this one machine, each host a network namespace of
// internal/testcluster on a private bridge, and prints the figures beside
// Docker swarm's documented defaults:
//
//   - join: from starting `shoal-manager --join` on a new node until node
//     ls on the first manager shows it Ready, for managers and workers;
//   - leader failover: kill -9 of the leader of three managers until a
//     survivor's node ls shows another manager as Leader and a `shoal stack
//     deploy` through a survivor succeeds;
//   - node down: kill -9 of a worker's daemon (its containers keep
//     running, as in a crash of the daemon alone) until node ls shows it
//     Down and until all replicas of a 6-replica service run on the other
//     nodes;
//   - deploy to converge: `shoal stack deploy` of 150 replicas on the five
//     nodes until all run, and `shoal stack rm` until none does.
//
// Usage, from the repository root, as root, after `make build`:
//
//	go run ./bench/cluster -bin bin [-joins 3] [-failovers 3] [-node-downs 3] [-down-replicas 6] [-replicas 150] [-deploys 1] [-timeout 2m] [-log-level info] [-keep-logs DIR] [-v]
//
// Everything it makes (namespaces, bridge, daemons, containers, mounts,
// the nodes' cgroup parents, temp dirs) is removed at the end, also on an
// error and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testcluster"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/runtime/cgroups"
)

type config struct {
	bin       string
	joins     int // timed joins per role
	failovers int
	nodeDowns int
	replicas  int // of the deploy benchmark
	downReps  int // of the node-down benchmark
	deploys   int
	timeout   time.Duration
	logLevel  string
	keepLogs  string
	verbose   bool
}

// bench holds everything a run sets up, so that cleanup can undo it.
type bench struct {
	cfg     config
	bin     string // absolute -bin
	nsenter string
	tmp     string // tb's temp dirs (the nodes' data and logs), compose files
	tarball string // the helper image
	t       *tb

	cluster      *testcluster.Cluster
	members      []*member // n1-n3 managers, n4-n5 workers
	cgroupPrefix string
	tokens       map[string]string // join tokens by role
	version      string            // the daemons' (Info)

	res                 *results
	idle                float64   // the machine's busy share before the run
	busyStart, busyEnd  cpuSample // around the timed benchmarks
	started, measuredAt time.Time
}

var verbose bool

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

func vlogf(format string, args ...any) {
	if verbose {
		logf(format, args...)
	}
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin", "directory holding shoal, shoal-manager and shoal-init (`make build` makes bin/)")
	flag.IntVar(&cfg.joins, "joins", 3, "timed joins of each role (after the first two of each, the last manager and the last worker leave and join again)")
	flag.IntVar(&cfg.failovers, "failovers", 3, "leader kills")
	flag.IntVar(&cfg.nodeDowns, "node-downs", 3, "worker daemon kills")
	flag.IntVar(&cfg.downReps, "down-replicas", 6, "replicas of the node-down benchmark's service")
	flag.IntVar(&cfg.replicas, "replicas", 150, "replicas of the deploy-to-converge benchmark")
	flag.IntVar(&cfg.deploys, "deploys", 1, "runs of the deploy-to-converge benchmark")
	flag.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "give up on a wait after this long")
	flag.StringVar(&cfg.logLevel, "log-level", "info", "the daemons' --log-level")
	flag.StringVar(&cfg.keepLogs, "keep-logs", "", "copy the nodes' logs (daemons, commands) into this directory before the temp dir is removed")
	flag.BoolVar(&cfg.verbose, "v", false, "say more: failed writes during failover, what the harness removed after the daemons")
	flag.Parse()
	if cfg.joins < 2 || cfg.failovers < 1 || cfg.nodeDowns < 1 || cfg.downReps < 1 || cfg.replicas < 1 || cfg.deploys < 0 ||
		cfg.timeout <= 0 || cfg.bin == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	verbose = cfg.verbose
	os.Exit(run(cfg))
}

func run(cfg config) (code int) {
	// The handler stays installed until cleanup is over, so that a second
	// Ctrl-C does not cut the cleanup short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	if os.Geteuid() != 0 {
		logf("must run as root (namespaces, cgroups, mounts)")
		return 1
	}
	b := &bench{cfg: cfg, tokens: map[string]string{}, started: time.Now()}
	defer func() {
		for _, p := range b.cleanup() {
			logf("cleanup: %s", p)
			code = 1
		}
		if code == 0 {
			logf("done in %s, cleanup included", time.Since(b.started).Round(time.Second))
		}
	}()
	if err := b.prepare(ctx); err != nil {
		logf("setup: %v", err)
		return 1
	}
	errc := make(chan error, 1)
	go func() { errc <- b.t.body(func() error { return b.measure(ctx) }) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		logf("interrupted; stopping, then cleaning up")
		select {
		case err = <-errc:
		case <-time.After(30 * time.Second):
			err = errors.New("the benchmark did not stop within 30 s of the interrupt; cleaning up beside it")
		}
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() == nil {
			// The harness then shows the end of every node's log.
			b.t.setFailed()
		}
		logf("%v", err)
		return 1
	}
	b.measuredAt = time.Now()
	printReport(os.Stdout, b)
	return 0
}

// prepare checks the binaries and tools, notes how busy the machine is
// and builds the helper image, before any node exists.
func (b *bench) prepare(ctx context.Context) error {
	var err error
	if b.bin, err = filepath.Abs(b.cfg.bin); err != nil {
		return err
	}
	for _, name := range []string{"shoal", "shoal-manager", "shoal-init"} {
		if fi, err := os.Stat(filepath.Join(b.bin, name)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("-bin %s: no executable %s (run `make build` first)", b.cfg.bin, name)
		}
	}
	if b.nsenter, err = exec.LookPath("nsenter"); err != nil {
		return fmt.Errorf("nodes run programs through nsenter (util-linux): %w", err)
	}
	// testutil builds the helper with the go tool, in this module.
	out, err := exec.CommandContext(ctx, "go", "list", "-m").Output()
	if err != nil || strings.TrimSpace(string(out)) != "github.com/shoal-dev/shoal" {
		return errors.New("run this from the shoal repository: go run ./bench/cluster -bin bin")
	}
	if b.tmp, err = os.MkdirTemp("", "shoal-bench-cluster-"); err != nil {
		return err
	}
	b.t = &tb{dir: b.tmp, verbose: b.cfg.verbose}
	removeStaleCgroups()

	s := sampleCPU()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	b.idle = busy(s, sampleCPU())
	if b.idle > 0.2 {
		logf("warning: the machine was %.0f%% busy before the benchmark; other work competes with it", 100*b.idle)
	}
	// Built before any daemon starts, so that the Go build does not
	// compete with them.
	return b.t.body(func() error {
		b.tarball = testutil.HelperRootfs(b.t, nil)
		return nil
	})
}

// cleanup stops the daemons and removes the cluster (testcluster's
// Cleanup: SIGTERM, SIGKILL after 10 s, then every process, mount, link
// and namespace of the nodes), then the nodes' cgroup parents and the temp
// dir, and checks that none of those is left. It returns what went wrong.
func (b *bench) cleanup() []string {
	var problems []string
	note := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if b.t == nil {
		return nil
	}
	for _, m := range b.members {
		if m.conn != nil {
			_ = m.conn.Close()
		}
	}
	errsBefore := len(b.t.errors())
	b.t.runCleanups()
	for _, e := range b.t.errors()[errsBefore:] {
		note("%s", e)
	}
	if n := b.t.leftovers(); n > 0 && !b.cfg.verbose {
		// A daemon stopped by SIGTERM keeps its state for a restart:
		// namespaces and links of its networks, nftables tables.
		logf("the harness removed %d things the daemons, stopped with SIGTERM, kept (-v lists them)", n)
	}
	if b.cgroupPrefix != "" {
		for _, m := range b.members {
			if err := cgroups.DeleteParent(m.cgroupParent()); err != nil {
				vlogf("%v", err)
			}
		}
		for _, p := range testutil.CgroupDirsContaining(b.cgroupPrefix) {
			if err := testutil.RemoveCgroupTree(p); err != nil {
				note("%v", err)
			}
		}
		if left := testutil.CgroupDirsContaining(b.cgroupPrefix); len(left) > 0 {
			note("cgroups left: %v", left)
		}
	}
	if b.cfg.keepLogs != "" && b.cluster != nil {
		if err := keepLogs(b.cfg.keepLogs, b.members); err != nil {
			note("keep the logs: %v", err)
		} else {
			logf("the nodes' logs are in %s", b.cfg.keepLogs)
		}
	}
	if b.tmp != "" {
		if err := os.RemoveAll(b.tmp); err != nil {
			note("%v", err)
		}
	}
	testutil.Cleanup()
	if b.cluster != nil {
		if _, err := os.Stat(filepath.Join("/run/shoal-testcluster", b.cluster.Prefix())); err == nil {
			note("the cluster's record %s is left: testcluster could not remove everything", filepath.Join("/run/shoal-testcluster", b.cluster.Prefix()))
		}
	}
	return problems
}

// keepLogs copies each node's log dir to dir/<node>.
func keepLogs(dir string, members []*member) error {
	for _, m := range members {
		dst := filepath.Join(dir, m.node.Name)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		ents, err := os.ReadDir(m.node.LogDir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			data, err := os.ReadFile(filepath.Join(m.node.LogDir, e.Name()))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

var _ testing.TB = (*tb)(nil)
