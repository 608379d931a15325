package main

import (
	"errors"
	"github.com/shoal-dev/shoal/internal/testutil"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupPrefix names the cgroup parents of a cluster's nodes:
// "shoal-bench-<cluster prefix>-<node>", where the cluster prefix is
// testcluster's "stc<pid>…". The pid tells the cgroups of a benchmark
// that was killed before its cleanup (see removeStaleCgroups).
func cgroupPrefix(clusterPrefix string) string { return "shoal-bench-" + clusterPrefix + "-" }

// removeStaleCgroups removes the empty cgroup parents that an earlier
// run, killed before its cleanup (kill -9), left: those named by
// cgroupPrefix whose process is gone. testcluster removes that run's
// namespaces, processes and mounts itself when the next cluster is made.
// A cgroup that still holds a process is left alone (rmdir refuses it).
func removeStaleCgroups() {
	for _, p := range testutil.CgroupDirsContaining("shoal-bench-stc") {
		rest := strings.TrimPrefix(filepath.Base(p), "shoal-bench-stc")
		end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if end <= 0 {
			continue
		}
		pid, err := strconv.Atoi(rest[:end])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // still running
		}
		if err := testutil.RemoveCgroupTree(p); err != nil {
			vlogf("stale cgroup %s: %v", p, err)
		}
	}
}

// clockTick is USER_HZ, the unit of /proc/stat; 100 on every Linux this
// runs on.
const clockTick = 10 * time.Millisecond

// cpuSample is the machine's CPU time so far, all CPUs.
type cpuSample struct{ busy, total time.Duration }

func sampleCPU() cpuSample {
	var s cpuSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 2 {
		return s
	}
	for i, v := range f[1:] {
		if i >= 8 { // guest times are already in user and nice
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		d := time.Duration(n) * clockTick
		s.total += d
		if i != 3 && i != 4 { // idle, iowait
			s.busy += d
		}
	}
	return s
}

// busy is the machine's busy share of all its CPUs between two samples.
func busy(a, b cpuSample) float64 {
	if t := b.total - a.total; t > 0 {
		return float64(b.busy-a.busy) / float64(t)
	}
	return 0
}
