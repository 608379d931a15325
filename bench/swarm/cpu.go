package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc's CPU times; 100 on every Linux
// this runs on.
const clockTick = 10 * time.Millisecond

// cpuSample is where the CPU time went so far: the manager process (its
// own threads; not the containers' inits, which are processes of their
// own) and the whole machine.
type cpuSample struct {
	at          time.Time
	manager     time.Duration
	busy, total time.Duration // all CPUs, since boot
}

func sampleCPU(managerPid int) cpuSample {
	s := cpuSample{at: time.Now()}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", managerPid)); managerPid > 0 && err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			// Fields 14 and 15 of stat (utime, stime), counted from the
			// state, which is field 3.
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				k, _ := strconv.ParseInt(f[12], 10, 64)
				s.manager = time.Duration(u+k) * clockTick
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
		for i, v := range f[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			if i >= 8 { // guest times are already in user and nice
				break
			}
			d := time.Duration(n) * clockTick
			s.total += d
			if i != 3 && i != 4 { // idle, iowait
				s.busy += d
			}
		}
	}
	return s
}

// cpuUse is what happened between two samples.
type cpuUse struct {
	manager time.Duration // CPU time of the manager process
	busy    float64       // the machine's busy share of all its CPUs
}

func (s cpuSample) until(e cpuSample) cpuUse {
	u := cpuUse{manager: e.manager - s.manager}
	if t := e.total - s.total; t > 0 {
		u.busy = float64(e.busy-s.busy) / float64(t)
	}
	return u
}

// idleUse samples the CPU use over d while the benchmark does nothing:
// work of other processes competes with it, which the report says.
func idleUse(managerPid int, d time.Duration) cpuUse {
	s := sampleCPU(managerPid)
	time.Sleep(d)
	return s.until(sampleCPU(managerPid))
}
