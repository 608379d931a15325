package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup2"
)

// Stats are one cgroup's counters. Limits read 0 where there is none.
type Stats struct {
	CPUUsageNanos       uint64
	CPUThrottledPeriods uint64
	// MemoryUsage includes page cache, as the kernel counts it; Docker's
	// `stats` subtracts inactive file pages before showing it.
	MemoryUsage, MemoryLimit uint64
	// MemoryMaxUsage is the peak usage: v1 memory.max_usage_in_bytes, v2
	// memory.peak (kernel 5.19+), 0 where unknown.
	MemoryMaxUsage         uint64
	PidsCurrent, PidsLimit uint64
}

// Stats reads the cgroup's counters.
func (c *Cgroup) Stats() (*Stats, error) {
	var (
		s   *Stats
		err error
	)
	if c.mode == "v2" {
		s, err = c.statsV2()
	} else {
		s, err = c.statsV1()
	}
	if err != nil {
		return nil, fmt.Errorf("stats of cgroup %s: %w", c.name, err)
	}
	return s, nil
}

func (c *Cgroup) statsV1() (*Stats, error) {
	var s Stats
	for _, f := range []struct {
		controller, file string
		dst              *uint64
	}{
		{"cpuacct", "cpuacct.usage", &s.CPUUsageNanos},
		{"memory", "memory.usage_in_bytes", &s.MemoryUsage},
		{"memory", "memory.limit_in_bytes", &s.MemoryLimit},
		{"memory", "memory.max_usage_in_bytes", &s.MemoryMaxUsage},
		{"pids", "pids.current", &s.PidsCurrent},
		{"pids", "pids.max", &s.PidsLimit},
	} {
		p, err := c.file(f.controller, f.file)
		if err != nil {
			return nil, err
		}
		if *f.dst, err = readUint(p); err != nil {
			return nil, err
		}
	}
	p, err := c.file("cpu", "cpu.stat")
	if err != nil {
		return nil, err
	}
	kv, err := readKV(p)
	if err != nil {
		return nil, err
	}
	s.CPUThrottledPeriods = kv["nr_throttled"]
	return &s, nil
}

// statsV2 uses containerd's parser, which tolerates the files of controllers
// that are not enabled (they read as 0).
func (c *Cgroup) statsV2() (*Stats, error) {
	d := c.dirs[0]
	group := "/" + strings.TrimPrefix(d.path, strings.TrimSuffix(d.h.mount, "/")+"/")
	m, err := cgroup2.Load(group, cgroup2.WithMountpoint(d.h.mount))
	if err != nil {
		return nil, err
	}
	// The library reads a missing directory as all zeroes; say it is gone.
	if _, err := readString(filepath.Join(d.path, "cgroup.procs")); errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	st, err := m.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatPids)
	if err != nil {
		return nil, err
	}
	limit := func(v uint64) uint64 {
		if v == math.MaxUint64 { // "max"
			return 0
		}
		return v
	}
	var s Stats
	if st.CPU != nil {
		s.CPUUsageNanos = st.CPU.UsageUsec * 1000
		s.CPUThrottledPeriods = st.CPU.NrThrottled
	}
	if st.Memory != nil {
		s.MemoryUsage = st.Memory.Usage
		s.MemoryLimit = limit(st.Memory.UsageLimit)
		s.MemoryMaxUsage = st.Memory.MaxUsage
	}
	if st.Pids != nil {
		s.PidsCurrent = st.Pids.Current
		s.PidsLimit = limit(st.Pids.Limit)
	}
	return &s, nil
}
