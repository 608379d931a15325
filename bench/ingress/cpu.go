package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times; 100 on every
// Linux architecture shoal runs on.
const clockTick = 100

// cpuTime returns the user+system CPU time a process has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields start after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// utime and stime are fields 14 and 15, that is f[11] and f[12].
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// cpuOf adds up the CPU time of processes; missing ones count 0.
func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if d, err := cpuTime(p); err == nil {
			sum += d
		}
	}
	return sum
}

// childrenOf lists the direct children of a process.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// hostTimes returns the CPU time all CPUs of the machine spent busy
// (user, system, interrupts, softirq: not idle, iowait nor the time the
// hypervisor gave to another machine, steal) and in all, from /proc/stat. The kernel path of ingress runs in
// softirq and in the system time of the client's own calls, in no process
// of its own: only the whole machine's time shows what it costs.
func hostTimes() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	var bj, tj uint64
	// guest and guest_nice are already counted in user and nice.
	for i, s := range f[1:min(len(f), 9)] {
		v, _ := strconv.ParseUint(s, 10, 64)
		tj += v
		if i != 3 && i != 4 && i != 7 { // idle, iowait, steal
			bj += v
		}
	}
	return time.Duration(bj) * time.Second / clockTick, time.Duration(tj) * time.Second / clockTick, nil
}

// machineBusy returns the share of the machine's CPU time that was not
// idle over d: other work during a run makes every figure worse, and the
// report says so.
func machineBusy(d time.Duration) (float64, error) {
	b0, t0, err := hostTimes()
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	b1, t1, err := hostTimes()
	if err != nil || t1 == t0 {
		return 0, err
	}
	return float64(b1-b0) / float64(t1-t0), nil
}
