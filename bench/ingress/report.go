package main

import (
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func printHeader(w io.Writer, cfg config, t tools, h *host, pubPort uint16, proxyIP string) {
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
	fmt.Fprintf(w, "  %s\n  %s\n", ver(t.wrk, "--version"), ver(t.nginx, "-v"))
	where := "on the node"
	if cfg.outside {
		where = fmt.Sprintf("outside: in netns %s, %s, routed through the node", h.client, h.clientAddr)
	}
	fmt.Fprintf(w, "  wrk -t%d -c%d -d%s --latency %s; %d rounds interleaved (+%s warm-up per target)\n",
		cfg.threads, cfg.conns, cfg.d, where, cfg.rounds, cfg.warmup)
	fmt.Fprintf(w, "  %d tasks: a Go net/http process each, in a netns of its own on bridge %s, %s-%d:%d\n",
		len(h.tasks), h.bridge, h.tasks[0].addr, 1+len(h.tasks), taskPort)
	fmt.Fprintf(w, "  published port %d: nftables DNAT (table ip %s) + lb.Balancer listening on every address\n", pubPort, h.id)
	fmt.Fprintf(w, "  direct = task 1 alone, %s:%d\n", h.tasks[0].addr, taskPort)
	fmt.Fprintf(w, "  dnat   = the port on the node's outside address %s: kernel DNAT, numgen round robin\n", h.pub)
	fmt.Fprintf(w, "  dnat-1 = another port on %s, DNATed to task 1 alone: direct's load, through DNAT\n", h.pub)
	if cfg.outside {
		fmt.Fprintf(w, "  lb     = another port, without DNAT, on %s: the userspace balancer (least connections, epoll loops), in this process\n", proxyIP)
	} else {
		fmt.Fprintf(w, "  lb     = the port on 127.0.0.1: the userspace balancer (least connections, epoll loops), in this process\n")
	}
	fmt.Fprintf(w, "  nginx  = stream{} least_conn on %s, worker_processes auto\n", proxyIP)
	fmt.Fprintf(w, "  host CPU/req: busy CPU time of the whole machine (wrk, tasks, proxy, kernel) per request\n")
}

func printMode(w io.Writer, mode string, targets []target, results [][]sample) {
	title := "keep-alive connections (wrk's default)"
	if mode == "close" {
		title = "a new connection per request (Connection: close)"
	}
	fmt.Fprintf(w, "%s\n", title)
	fmt.Fprintf(w, "  %-6s %-7s %9s %8s %9s %9s %7s %13s %5s %14s\n",
		"round", "target", "req/s", "×direct", "p50", "p99", "errors", "host CPU/req", "busy", "proxy CPU/req")
	di := slices.IndexFunc(targets, func(t target) bool { return t.name == "direct" })
	line := func(round string, t target, s, direct sample) {
		ratio := "—"
		if direct.rps > 0 {
			ratio = fmt.Sprintf("%.2f", s.rps/direct.rps)
		}
		proxy := "—"
		if t.pids != nil {
			proxy = fmtDur(s.proxyCPU)
		}
		fmt.Fprintf(w, "  %-6s %-7s %9.0f %8s %9s %9s %7d %13s %4.0f%% %14s\n",
			round, t.name, s.rps, ratio, fmtDur(s.p50), fmtDur(s.p99), s.errors, fmtDur(s.hostCPU), 100*s.busy, proxy)
	}
	for r := range results[0] {
		for i, t := range targets {
			var direct sample
			if di >= 0 {
				direct = results[di][r]
			}
			line(fmt.Sprint(r+1), t, results[i][r], direct)
		}
	}
	med := make([]sample, len(targets))
	for i := range targets {
		med[i] = median(results[i])
	}
	for i, t := range targets {
		var direct sample
		if di >= 0 {
			direct = med[di]
		}
		line("median", t, med[i], direct)
	}
	byName := map[string]sample{}
	for i, t := range targets {
		byName[t.name] = med[i]
	}
	direct, okD := byName["direct"]
	kernel, okK := byName["dnat"]
	one, ok1 := byName["dnat-1"]
	user, okU := byName["lb"]
	nginx, okN := byName["nginx"]
	if okD && okK {
		fmt.Fprintf(w, "  dnat/direct:   req/s %.3f× (goal ≥ 0.90: %s), p99 %.2f×, host CPU per request %.2f×\n",
			kernel.rps/direct.rps, yes(kernel.rps >= 0.9*direct.rps), float64(kernel.p99)/float64(direct.p99),
			float64(kernel.hostCPU)/float64(direct.hostCPU))
	}
	if okD && ok1 {
		fmt.Fprintf(w, "  dnat-1/direct: req/s %.2f×, p99 %.2f×, host CPU per request %.2f× (NAT's own cost: the same task)\n",
			one.rps/direct.rps, float64(one.p99)/float64(direct.p99), float64(one.hostCPU)/float64(direct.hostCPU))
	}
	if okK && okN {
		fmt.Fprintf(w, "  dnat/nginx:    req/s %.3f× (goal > 1: %s), p99 %.2f×, host CPU per request %.2f×\n",
			kernel.rps/nginx.rps, yes(kernel.rps > nginx.rps), float64(kernel.p99)/float64(nginx.p99),
			float64(kernel.hostCPU)/float64(nginx.hostCPU))
	}
	if okU && okN {
		fmt.Fprintf(w, "  lb/nginx:      req/s %.2f×, p99 %.2f×, proxy CPU per request %.2f×\n",
			user.rps/nginx.rps, float64(user.p99)/float64(nginx.p99), float64(user.proxyCPU)/float64(nginx.proxyCPU))
	}
	fmt.Fprintln(w)
}

// median takes the median of each figure on its own (req/s, p50, p99,
// CPU, busy); errors are summed over the rounds.
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
	m.proxyCPU = time.Duration(pick(func(s sample) float64 { return float64(s.proxyCPU) }))
	m.hostCPU = time.Duration(pick(func(s sample) float64 { return float64(s.hostCPU) }))
	m.busy = pick(func(s sample) float64 { return s.busy })
	for _, s := range ss {
		m.errors += s.errors
	}
	return m
}

func printRotation(w io.Writer, trials int, rr rotationReport) {
	r, p := rr.res, rr.path
	if len(r.add) == 0 {
		return
	}
	fmt.Fprintf(w, "rotation, %s: 2 steady tasks, 4 clients opening a new connection per request (%.0f connections/s), %d trials\n",
		p.name, r.connRate, trials)
	fmt.Fprintf(w, "  %s → its first request: median %s, max %s (goal < 100ms: %s)\n",
		p.addName, fmtDur(medianDur(r.add)), fmtDur(slices.Max(r.add)), yes(slices.Max(r.add) < 100*time.Millisecond))
	fmt.Fprintf(w, "  %s call: median %s, max %s; %s call: median %s, max %s\n",
		p.addName, fmtDur(medianDur(r.addCall)), fmtDur(slices.Max(r.addCall)),
		p.removeName, fmtDur(medianDur(r.removeCall)), fmtDur(slices.Max(r.removeCall)))
	fmt.Fprintf(w, "  requests on connections opened after %s returned that reached the task: %d (of %d it served before)\n",
		p.removeName, r.late, r.served)
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

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}
