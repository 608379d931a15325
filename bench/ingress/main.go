// Command ingress measures shoal's ingress load balancer (package lb) side
// by side with a direct connection to one task and with nginx's stream{}
// proxy (Debian's nginx) in front of the same tasks, in one run:
//
//   - requests per second and p50/p99 latency of small HTTP requests, with
//     wrk (Debian's wrk, -t2 -c50 --latency by default), against one task
//     directly, the balancer, and nginx stream; rounds interleave the
//     three targets so that noise on the machine hits all alike; once with
//     keep-alive connections (wrk's default) and once with a new
//     connection per request (Connection: close);
//   - the CPU time the proxy process(es) used per request;
//   - time from SetBackends(new task) to its first request, and from a
//     Drain call to its return, with a check that no connection opened
//     after Drain returned reached the drained task.
//
// The tasks are 5 Go net/http servers on 127.0.0.11-15, in a child process
// (the same program, re-executed); the balancer runs in this process.
// Everything listens on loopback addresses only. It installs nothing: if
// wrk or nginx (with its stream module) is missing it says what to install
// and exits. Usage, from the repository root:
//
//	go run ./bench/ingress [-d 10s] [-rounds 3] [-t 2] [-c 50] [-modes keepalive,close] [-trials 20]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/lb"
)

type config struct {
	d        time.Duration
	warmup   time.Duration
	rounds   int
	threads  int
	conns    int
	backends int
	modes    []string
	trials   int
	cpuProf  string
	targets  []string
}

func main() {
	var cfg config
	var modes string
	n := flag.Int("backends", 5, "tasks behind the port")
	flag.DurationVar(&cfg.d, "d", 10*time.Second, "duration of each wrk run")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured wrk run per target and mode first (0: none)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "measured rounds; each runs every target once, in rotating order")
	flag.IntVar(&cfg.threads, "t", 2, "wrk threads")
	flag.IntVar(&cfg.conns, "c", 50, "wrk connections")
	flag.StringVar(&modes, "modes", "keepalive,close", "connection modes: keepalive (wrk's default), close (a new connection per request)")
	flag.IntVar(&cfg.trials, "trials", 20, "add-then-drain trials of the rotation measurement (0: skip it)")
	targets := flag.String("targets", "direct,ingress,nginx", "what wrk measures (the ratios need all three)")
	flag.StringVar(&cfg.cpuProf, "cpuprofile", "", "write a CPU profile of this process (the balancer) over the wrk runs to this file")
	flag.Parse()
	cfg.backends = *n
	if os.Getenv(roleEnv) == "backends" {
		serveBackends(cfg.backends)
		return
	}
	cfg.modes = strings.Split(modes, ",")
	cfg.targets = strings.Split(*targets, ",")
	for _, m := range cfg.modes {
		if m != "keepalive" && m != "close" {
			fmt.Fprintf(os.Stderr, "bench: unknown mode %q\n", m)
			os.Exit(2)
		}
	}
	if cfg.rounds < 1 || cfg.d < time.Second || cfg.backends < 1 || cfg.backends > 200 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

// target is one thing wrk measures.
type target struct {
	name string
	url  string
	// pids of the proxy's processes (CPU accounting); nil for direct.
	pids func() []int
}

type sample struct {
	wrkResult
	cpuPerReq time.Duration // proxy CPU per request, 0 for direct
}

func run(cfg config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A closed stdout (`| head`) must not kill the program before it has
	// stopped nginx: nginx's workers do not die with their master.
	signal.Ignore(syscall.SIGPIPE)
	fail := func(err error) int {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
		} else {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		return 1
	}

	wrk, nginx, module, err := findTools()
	if err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp("", "shoal-bench-ingress-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)

	bp, err := startBackends(cfg.backends)
	if err != nil {
		return fail(fmt.Errorf("backends: %w", err))
	}
	defer bp.stop()

	ports, err := freePorts(3)
	if err != nil {
		return fail(err)
	}
	ingressPort, nginxPort, rotationPort := ports[0], ports[1], ports[2]

	bal := lb.New(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	defer bal.Close()
	if err := bal.Publish(lb.PortConfig{Port: ingressPort, Protocol: "tcp", ListenAddr: "127.0.0.1"}); err != nil {
		return fail(err)
	}
	var bs []lb.Backend
	for i, a := range bp.addrs {
		bs = append(bs, lb.Backend{TaskID: fmt.Sprintf("task-%d", i+1), Addr: a})
	}
	bal.SetBackends(ingressPort, "tcp", bs)

	nginxAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(nginxPort)))
	np, err := startNginx(nginx, module, tmp, nginxAddr, bp.addrs)
	if err != nil {
		return fail(err)
	}
	defer np.stop()

	self := os.Getpid()
	targets := []target{
		{"direct", "http://" + bp.addrs[0] + "/", nil},
		{"ingress", "http://127.0.0.1:" + strconv.Itoa(int(ingressPort)) + "/", func() []int { return []int{self} }},
		{"nginx", "http://" + nginxAddr + "/", np.pids},
	}
	targets = slices.DeleteFunc(targets, func(t target) bool { return !slices.Contains(cfg.targets, t.name) })
	if len(targets) == 0 {
		return fail(errors.New("no known target in -targets"))
	}

	busy, err := machineBusy(2 * time.Second)
	if err != nil {
		return fail(err)
	}
	printHeader(os.Stdout, cfg, wrk, nginx)
	fmt.Printf("  machine busy before the run (tasks and nginx idle): %.0f%%", 100*busy)
	if busy > 0.2 {
		fmt.Print(" — other work is running: every figure suffers, the ratios less")
	}
	fmt.Print("\n\n")
	if cfg.cpuProf != "" {
		f, err := os.Create(cfg.cpuProf)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	for _, mode := range cfg.modes {
		closeConns := mode == "close"
		if cfg.warmup > 0 {
			for _, t := range targets {
				if _, err := runWrk(ctx, wrk, cfg.threads, cfg.conns, cfg.warmup, closeConns, t.url); err != nil {
					return fail(err)
				}
			}
		}
		results := make([][]sample, len(targets))
		for r := range cfg.rounds {
			for k := range targets {
				i := (k + r) % len(targets)
				s, err := measure(ctx, wrk, cfg, closeConns, targets[i])
				if err != nil {
					return fail(err)
				}
				results[i] = append(results[i], s)
			}
		}
		printMode(os.Stdout, mode, targets, results)
	}

	if cfg.trials > 0 {
		rot, err := measureRotation(ctx, bal, rotationPort, cfg.trials, 4)
		if err != nil {
			return fail(fmt.Errorf("rotation: %w", err))
		}
		printRotation(os.Stdout, cfg.trials, rot)
	}
	return 0
}

// measure runs wrk once against t, with the proxy's CPU time around it.
func measure(ctx context.Context, wrk string, cfg config, closeConns bool, t target) (sample, error) {
	var pids []int
	if t.pids != nil {
		pids = t.pids()
	}
	cpu0 := cpuOf(pids)
	r, err := runWrk(ctx, wrk, cfg.threads, cfg.conns, cfg.d, closeConns, t.url)
	if err != nil {
		return sample{}, err
	}
	s := sample{wrkResult: r}
	if pids != nil && r.requests > 0 {
		s.cpuPerReq = (cpuOf(pids) - cpu0) / time.Duration(r.requests)
	}
	return s, nil
}

// findTools finds wrk and nginx with its stream module, or says what to
// install.
func findTools() (wrk, nginx, module string, err error) {
	var missing []string
	wrk, werr := exec.LookPath("wrk")
	if werr != nil {
		missing = append(missing, "wrk (Debian: apt-get install wrk)")
	}
	nginx, nerr := exec.LookPath("nginx")
	if nerr != nil {
		// Debian puts it in /usr/sbin, which a user's PATH may lack.
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			nginx, nerr = "/usr/sbin/nginx", nil
		}
	}
	if nerr != nil {
		missing = append(missing, "nginx with its stream module (Debian: apt-get install nginx libnginx-mod-stream)")
	} else if module, err = nginxModule(nginx); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		return "", "", "", errors.New("missing: " + strings.Join(missing, "; "))
	}
	return wrk, nginx, module, nil
}

// freePorts returns n distinct ports the kernel reports free on 127.0.0.1.
func freePorts(n int) ([]uint16, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []uint16
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, uint16(l.Addr().(*net.TCPAddr).Port))
	}
	return ports, nil
}

func printHeader(w io.Writer, cfg config, wrk, nginx string) {
	ver := func(name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	var uts syscall.Utsname
	syscall.Uname(&uts)
	rel := make([]byte, 0, len(uts.Release))
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	fmt.Fprintf(w, "shoal ingress benchmark: %d CPUs, Linux %s, %s\n", runtime.NumCPU(), rel, runtime.Version())
	fmt.Fprintf(w, "  %s\n  %s\n", ver(wrk, "--version"), ver(nginx, "-v"))
	fmt.Fprintf(w, "  wrk -t%d -c%d -d%s --latency; %d rounds interleaved (+%s warm-up per target)\n",
		cfg.threads, cfg.conns, cfg.d, cfg.rounds, cfg.warmup)
	fmt.Fprintf(w, "  %d tasks: Go net/http on 127.0.0.11-%d in one child process; direct = task 1 alone;\n",
		cfg.backends, 10+cfg.backends)
	fmt.Fprintf(w, "  ingress = lb.Balancer in this process (least connections, epoll loops); nginx = stream{} least_conn, worker_processes auto\n")
}

func printMode(w io.Writer, mode string, targets []target, results [][]sample) {
	title := "keep-alive connections (wrk's default)"
	if mode == "close" {
		title = "a new connection per request (Connection: close)"
	}
	fmt.Fprintf(w, "%s\n", title)
	fmt.Fprintf(w, "  %-6s %-8s %11s %10s %10s %8s %14s\n", "round", "target", "req/s", "p50", "p99", "errors", "proxy CPU/req")
	for r := range results[0] {
		for i, t := range targets {
			s := results[i][r]
			fmt.Fprintf(w, "  %-6d %-8s %11.0f %10s %10s %8d %14s\n", r+1, t.name, s.rps, fmtDur(s.p50), fmtDur(s.p99), s.errors, fmtCPU(s, t))
		}
	}
	med := make([]sample, len(targets))
	for i, t := range targets {
		med[i] = median(results[i])
		fmt.Fprintf(w, "  %-6s %-8s %11.0f %10s %10s %8d %14s\n", "median", t.name, med[i].rps, fmtDur(med[i].p50), fmtDur(med[i].p99), med[i].errors, fmtCPU(med[i], t))
	}
	if len(targets) != 3 {
		fmt.Fprintln(w)
		return
	}
	direct, ingress, nginx := med[0], med[1], med[2]
	fmt.Fprintf(w, "  ingress/direct: req/s %.2f× (goal ≥ 0.90: %s), p99 %.2f×\n",
		ingress.rps/direct.rps, yes(ingress.rps >= 0.9*direct.rps), float64(ingress.p99)/float64(direct.p99))
	fmt.Fprintf(w, "  ingress/nginx:  req/s %.2f× (goal > 1: %s), p99 %.2f×", ingress.rps/nginx.rps, yes(ingress.rps > nginx.rps),
		float64(ingress.p99)/float64(nginx.p99))
	if nginx.cpuPerReq > 0 {
		fmt.Fprintf(w, ", proxy CPU per request %.2f×", float64(ingress.cpuPerReq)/float64(nginx.cpuPerReq))
	}
	fmt.Fprintf(w, "\n\n")
}

// median takes the median of each figure on its own (req/s, p50, p99,
// CPU); errors are summed over the rounds.
func median(ss []sample) sample {
	pick := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	var m sample
	m.rps = pick(func(s sample) float64 { return s.rps })
	m.p50 = time.Duration(pick(func(s sample) float64 { return float64(s.p50) }))
	m.p99 = time.Duration(pick(func(s sample) float64 { return float64(s.p99) }))
	m.cpuPerReq = time.Duration(pick(func(s sample) float64 { return float64(s.cpuPerReq) }))
	for _, s := range ss {
		m.errors += s.errors
	}
	return m
}

func printRotation(w io.Writer, trials int, r rotationResult) {
	fmt.Fprintf(w, "rotation: 2 steady tasks, 4 clients opening a new connection per request (%.0f connections/s), %d trials\n", r.connRate, trials)
	fmt.Fprintf(w, "  SetBackends(new task) → its first request: median %s, max %s (goal < 100ms: %s)\n",
		fmtDur(medianDur(r.add)), fmtDur(slices.Max(r.add)), yes(slices.Max(r.add) < 100*time.Millisecond))
	fmt.Fprintf(w, "  Drain(task) → out of the rotation (Drain returned): median %s, max %s\n",
		fmtDur(medianDur(r.drainCall)), fmtDur(slices.Max(r.drainCall)))
	fmt.Fprintf(w, "  requests on connections opened after Drain returned that reached the drained task: %d (of %d it served before)\n", r.late, r.served)
}

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	}
}

func fmtCPU(s sample, t target) string {
	if t.pids == nil {
		return "—"
	}
	return fmtDur(s.cpuPerReq)
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}
