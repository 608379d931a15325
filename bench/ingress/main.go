// Command ingress measures what a client of a published port gets from
// shoal's ingress, side by side with a direct connection to one task and
// with nginx's stream{} proxy (Debian's nginx) in front of the same tasks,
// in one run:
//
//   - requests per second and p50/p99 latency of small HTTP requests, with
//     wrk (Debian's wrk, -t2 -c50 --latency by default) run on the node,
//     against one task directly, the published port on the node's outside
//     address (the kernel path: nftables DNAT of package lb/dnat), the
//     same port on 127.0.0.1 (the userspace proxy of package lb, which
//     loopback clients get) and nginx stream; rounds interleave the
//     targets so that noise on the machine hits all alike; once with
//     keep-alive connections (wrk's default) and once with a new
//     connection per request (Connection: close);
//   - the CPU time of the whole machine per request, for every target (the
//     kernel path has no process of its own), and the proxy processes'
//     own per request;
//   - for the kernel path and the userspace one, the time from the call
//     that adds a new task to the rotation until its first request, and a
//     check that no connection opened after the call that removes it
//     reaches it.
//
// The tasks are 5 Go net/http servers, each a process of its own (the
// program re-executed) in a network namespace of its own, behind a veth
// on a bridge, as shoal runs a service's tasks. It needs root and makes,
// all named after "shbi<pid>", the namespaces, the links and an nftables
// table, and removes them at the end, also on an error or Ctrl-C. It
// installs nothing: if wrk, nginx (with its stream module) or nsenter is
// missing it says what to install and exits. Usage, as root from the
// repository root:
//
//	go run ./bench/ingress [-d 5s] [-rounds 3] [-t 2] [-c 50] [-modes keepalive,close] [-trials 20]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/lb"
	"github.com/shoal-dev/shoal/lb/dnat"
)

type config struct {
	d       time.Duration
	warmup  time.Duration
	rounds  int
	threads int
	conns   int
	tasks   int
	modes   []string
	trials  int
	cpuProf string
	targets []string
	// outside runs wrk in a client namespace routed through the node
	// instead of on the node itself.
	outside bool
}

// targetNames are the targets, in the order of the report.
var targetNames = []string{"direct", "dnat-1", "dnat", "lb", "nginx"}

func main() {
	if os.Getenv(roleEnv) == "task" {
		serveTask()
		return
	}
	var cfg config
	var modes, targets, client string
	flag.IntVar(&cfg.tasks, "tasks", 5, "tasks behind the published port (3 to 50)")
	flag.DurationVar(&cfg.d, "d", 5*time.Second, "duration of each wrk run")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured wrk run per target and mode first (0: none)")
	flag.IntVar(&cfg.rounds, "rounds", 3, "measured rounds; each runs every target once, in rotating order")
	flag.IntVar(&cfg.threads, "t", 2, "wrk threads")
	flag.IntVar(&cfg.conns, "c", 50, "wrk connections")
	flag.StringVar(&modes, "modes", "keepalive,close", "connection modes: keepalive (wrk's default), close (a new connection per request)")
	flag.IntVar(&cfg.trials, "trials", 20, "add-then-remove trials of each rotation measurement (0: skip them)")
	flag.StringVar(&targets, "targets", strings.Join(targetNames, ","), "what wrk measures (the goals need direct, dnat and nginx)")
	flag.StringVar(&client, "client", "node", "where wrk runs: node (on the node, as a local client of its outside address), outside (in a namespace of its own, a machine whose traffic the node forwards)")
	flag.StringVar(&cfg.cpuProf, "cpuprofile", "", "write a CPU profile of this process (the userspace balancer) over the wrk runs to this file")
	flag.Parse()
	if client != "node" && client != "outside" {
		fmt.Fprintf(os.Stderr, "bench: -client %q: want node or outside\n", client)
		os.Exit(2)
	}
	cfg.outside = client == "outside"
	cfg.modes = strings.Split(modes, ",")
	cfg.targets = strings.Split(targets, ",")
	for _, m := range cfg.modes {
		if m != "keepalive" && m != "close" {
			fmt.Fprintf(os.Stderr, "bench: unknown mode %q\n", m)
			os.Exit(2)
		}
	}
	for _, t := range cfg.targets {
		if !slices.Contains(targetNames, t) {
			fmt.Fprintf(os.Stderr, "bench: unknown target %q (known: %s)\n", t, strings.Join(targetNames, ", "))
			os.Exit(2)
		}
	}
	if cfg.rounds < 1 || cfg.d < time.Second || cfg.tasks < 3 || cfg.tasks > 50 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

// target is one thing wrk measures.
type target struct {
	name string
	url  string // ends with "/"
	// pids of the proxy's processes (CPU accounting); nil when there is
	// none (direct, and the kernel path).
	pids func() []int
}

type sample struct {
	wrkResult
	proxyCPU time.Duration // proxy processes' CPU per request, 0 without
	hostCPU  time.Duration // the machine's busy CPU time per request
	busy     float64       // share of the machine's CPU time busy during the run
}

func run(cfg config) (code int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	// A closed stdout (`| head`) must not kill the program before it has
	// stopped nginx and removed the links: nginx's workers do not die
	// with their master, and links outlive every process.
	signal.Ignore(syscall.SIGPIPE)
	fail := func(err error) int {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
		} else {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		return 1
	}

	if os.Geteuid() != 0 {
		return fail(errors.New("needs root: it makes network namespaces, links and an nftables table"))
	}
	tools, err := findTools()
	if err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp("", "shoal-bench-ingress-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)

	h, err := newHost(cfg.tasks)
	if err != nil {
		return fail(fmt.Errorf("tasks' network: %w", err))
	}
	var m *dnat.Manager
	var benchPorts []uint16 // the ports the run listens on or DNATs, for flushConntrack
	// Runs last, after the processes and listeners below are stopped:
	// the kernel's state of the run, then a check that none is left.
	defer func() {
		var errs []error
		if m != nil {
			errs = append(errs, m.Close())
		}
		errs = append(errs, h.flushConntrack(benchPorts...), h.cleanup())
		left := h.leftovers()
		if ok, err := tableExists(h.id); err != nil || ok {
			left = append(left, fmt.Sprintf("nftables table ip %s (%v)", h.id, err))
		}
		if err := errors.Join(errs...); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
			code = 1
		}
		if len(left) > 0 {
			fmt.Fprintf(os.Stderr, "bench: left on the host: %s\n", strings.Join(left, ", "))
			code = 1
		}
	}()

	procs, err := startTasks(tools.nsenter, h.tasks)
	if err != nil {
		return fail(fmt.Errorf("tasks: %w", err))
	}
	defer stopTasks(procs)

	ports, err := freePorts(5)
	if err != nil {
		return fail(err)
	}
	pubPort, onePort, nginxPort, rotPort, lbPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	benchPorts = ports
	// A client on the node reaches the proxies on loopback, as it reaches
	// the userspace balancer of a published port; a client outside calls
	// the node's outside address, where the balancer serves only a port
	// the kernel does not (one that asks for a PROXY protocol header, or
	// a node without the kernel path): lbPort, which has no DNAT rule.
	proxyIP, lbTargetPort := "127.0.0.1", pubPort
	wrkCmd := []string{tools.wrk}
	clientNs, clientAddr := "", h.gw
	if cfg.outside {
		proxyIP, lbTargetPort = h.pub.String(), lbPort
		wrkCmd = []string{tools.nsenter, "--net=" + h.client, "--", tools.wrk}
		clientNs, clientAddr = h.client, h.clientAddr
	}

	// The published port, as a node holds it: the kernel's table for
	// every address but loopback, the userspace balancer listening on
	// every address (it sees only loopback's connections).
	m, err = dnat.New(dnat.Config{Table: h.id, BridgePrefix: h.bridge,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return fail(err)
	}
	// A second port, with task 1 alone behind it, is the control of the
	// kernel path: the load of direct (one task process), through DNAT.
	basePorts := []dnat.Port{
		{Name: "bench", Port: pubPort, Proto: "tcp", Target: taskPort, Backends: taskAddrs(h.tasks)},
		{Name: "bench-1", Port: onePort, Proto: "tcp", Target: taskPort, Backends: taskAddrs(h.tasks[:1])},
	}
	if err := m.Sync(nil, basePorts); err != nil {
		return fail(err)
	}
	bal := lb.New(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	defer bal.Close()
	if err := bal.Publish(lb.PortConfig{Port: pubPort, Protocol: "tcp"}); err != nil {
		return fail(err)
	}
	var bs []lb.Backend
	var backendAddrs []string
	for _, t := range h.tasks {
		a := net.JoinHostPort(t.addr.String(), strconv.Itoa(taskPort))
		bs = append(bs, lb.Backend{TaskID: t.name, Addr: a})
		backendAddrs = append(backendAddrs, a)
	}
	bal.SetBackends(pubPort, "tcp", bs)
	if cfg.outside {
		if err := bal.Publish(lb.PortConfig{Port: lbPort, Protocol: "tcp", ListenAddr: h.pub.String()}); err != nil {
			return fail(err)
		}
		bal.SetBackends(lbPort, "tcp", bs)
	}

	nginxAddr := net.JoinHostPort(proxyIP, strconv.Itoa(int(nginxPort)))
	np, err := startNginx(tools.nginx, tools.nginxModule, tmp, nginxAddr, backendAddrs)
	if err != nil {
		return fail(err)
	}
	defer np.stop()

	self := os.Getpid()
	targets := []target{
		{"direct", fmt.Sprintf("http://%s:%d/", h.tasks[0].addr, taskPort), nil},
		{"dnat-1", fmt.Sprintf("http://%s:%d/", h.pub, onePort), nil},
		{"dnat", fmt.Sprintf("http://%s:%d/", h.pub, pubPort), nil},
		{"lb", fmt.Sprintf("http://%s:%d/", proxyIP, lbTargetPort), func() []int { return []int{self} }},
		{"nginx", "http://" + nginxAddr + "/", np.pids},
	}
	if err := checkPaths(h, targets, clientNs, clientAddr); err != nil {
		return fail(fmt.Errorf("paths: %w", err))
	}
	targets = slices.DeleteFunc(targets, func(t target) bool { return !slices.Contains(cfg.targets, t.name) })

	if ctx.Err() != nil { // Ctrl-C during the setup
		return fail(ctx.Err())
	}
	busy, err := machineBusy(2 * time.Second)
	if err != nil {
		return fail(err)
	}
	printHeader(os.Stdout, cfg, tools, h, pubPort, proxyIP)
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
				if err := h.flushConntrack(benchPorts...); err != nil {
					return fail(err)
				}
				if _, err := runWrk(ctx, wrkCmd, cfg.threads, cfg.conns, cfg.warmup, closeConns, t.url); err != nil {
					return fail(err)
				}
			}
		}
		results := make([][]sample, len(targets))
		for r := range cfg.rounds {
			for k := range targets {
				i := (k + r) % len(targets)
				s, err := measure(ctx, wrkCmd, cfg, closeConns, targets[i], h, benchPorts)
				if err != nil {
					return fail(err)
				}
				results[i] = append(results[i], s)
			}
		}
		printMode(os.Stdout, mode, targets, results)
	}

	if cfg.trials > 0 {
		if err := h.flushConntrack(benchPorts...); err != nil {
			return fail(err)
		}
		rots, err := rotations(ctx, cfg, h, m, basePorts, bal, rotPort)
		for _, r := range rots {
			printRotation(os.Stdout, cfg.trials, r)
		}
		if err != nil {
			return fail(fmt.Errorf("rotation: %w", err))
		}
	}
	return 0
}

// rotationReport is one rotation path's result.
type rotationReport struct {
	path rotationPath
	res  rotationResult
}

// rotations measures how the kernel path and then the userspace balancer
// follow changes of a port's tasks: a port of its own with 2 steady
// tasks, to which a newcomer in the third task's namespace is added and
// removed trials times.
func rotations(ctx context.Context, cfg config, h *host, m *dnat.Manager, basePorts []dnat.Port, bal *lb.Balancer, port uint16) ([]rotationReport, error) {
	var steady []rotationTask
	defer func() {
		for _, t := range steady {
			t.srv.Close()
		}
	}()
	for i := range 2 {
		t, err := startRotationTask(h.tasks[i], fmt.Sprintf("steady-%d", i+1))
		if err != nil {
			return nil, err
		}
		steady = append(steady, t)
	}
	var steadyIPs []netip.Addr
	var steadyLB []lb.Backend
	for i, t := range steady {
		steadyIPs = append(steadyIPs, h.tasks[i].addr)
		steadyLB = append(steadyLB, lb.Backend{TaskID: t.id, Addr: t.addr})
	}
	newcomerNs := h.tasks[2]
	rotPort := dnat.Port{Name: "rotation", Port: port, Proto: "tcp", Target: rotationPort, Backends: steadyIPs}
	with := rotPort
	with.Backends = append(slices.Clone(steadyIPs), newcomerNs.addr)
	// Every Sync holds all of the node's frontends, as the product's do.
	without := append(slices.Clone(basePorts), rotPort)
	withNew := append(slices.Clone(basePorts), with)
	if err := m.Sync(nil, without); err != nil {
		return nil, err
	}
	if err := bal.Publish(lb.PortConfig{Port: port, Protocol: "tcp"}); err != nil {
		return nil, err
	}
	bal.SetBackends(port, "tcp", steadyLB)

	paths := []rotationPath{{
		name:    "kernel (dnat)",
		url:     fmt.Sprintf("http://%s:%d/?t=", h.pub, port),
		addName: "Sync(+ new task)", removeName: "Sync(− task)",
		add:    func(rotationTask) error { return m.Sync(nil, withNew) },
		remove: func(rotationTask) error { return m.Sync(nil, without) },
	}, {
		name:    "userspace (lb, loopback)",
		url:     fmt.Sprintf("http://127.0.0.1:%d/?t=", port),
		addName: "SetBackends(+ new task)", removeName: "Drain(task)",
		add: func(t rotationTask) error {
			bal.SetBackends(port, "tcp", append(slices.Clone(steadyLB), lb.Backend{TaskID: t.id, Addr: t.addr}))
			return nil
		},
		remove: func(t rotationTask) error {
			bal.Drain(t.id)
			// The node's next list no longer has the task.
			bal.SetBackends(port, "tcp", steadyLB)
			return nil
		},
	}}
	var out []rotationReport
	for _, p := range paths {
		res, err := measureRotation(ctx, p, newcomerNs, cfg.trials, 4)
		if err != nil {
			return out, fmt.Errorf("%s: %w", p.name, err)
		}
		out = append(out, rotationReport{p, res})
	}
	return out, nil
}

// measure runs wrk once against t, with the machine's and the proxy's
// CPU time around it. The conntrack entries of earlier runs are deleted
// first, untimed, so that every run starts from the same table.
func measure(ctx context.Context, wrk []string, cfg config, closeConns bool, t target, h *host, ports []uint16) (sample, error) {
	if err := h.flushConntrack(ports...); err != nil {
		return sample{}, err
	}
	var pids []int
	if t.pids != nil {
		pids = t.pids()
	}
	cpu0 := cpuOf(pids)
	busy0, total0, err := hostTimes()
	if err != nil {
		return sample{}, err
	}
	r, err := runWrk(ctx, wrk, cfg.threads, cfg.conns, cfg.d, closeConns, t.url)
	if err != nil {
		return sample{}, err
	}
	busy1, total1, err := hostTimes()
	if err != nil {
		return sample{}, err
	}
	s := sample{wrkResult: r}
	if total1 > total0 {
		s.busy = float64(busy1-busy0) / float64(total1-total0)
	}
	if r.requests > 0 {
		s.hostCPU = (busy1 - busy0) / time.Duration(r.requests)
		if pids != nil {
			s.proxyCPU = (cpuOf(pids) - cpu0) / time.Duration(r.requests)
		}
	}
	return s, nil
}

// tools are the programs the benchmark runs.
type tools struct {
	wrk, nginx, nginxModule, nsenter string
}

// findTools finds wrk, nginx with its stream module and nsenter, or says
// what to install.
func findTools() (tools, error) {
	var t tools
	var missing []string
	var err error
	if t.wrk, err = exec.LookPath("wrk"); err != nil {
		missing = append(missing, "wrk (Debian: apt-get install wrk)")
	}
	if t.nsenter, err = exec.LookPath("nsenter"); err != nil {
		missing = append(missing, "nsenter (Debian: apt-get install util-linux)")
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
	} else if t.nginxModule, err = nginxModule(nginx); err != nil {
		missing = append(missing, err.Error())
	}
	t.nginx = nginx
	if len(missing) > 0 {
		return t, errors.New("missing: " + strings.Join(missing, "; "))
	}
	return t, nil
}

// freePorts returns n distinct TCP ports the kernel reports free on every
// address.
func freePorts(n int) ([]uint16, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []uint16
	for range n {
		l, err := net.Listen("tcp4", ":0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, uint16(l.Addr().(*net.TCPAddr).Port))
	}
	return ports, nil
}
