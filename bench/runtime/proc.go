package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// memUsage adds up the memory of some processes.
type memUsage struct {
	procs    int
	rss, pss uint64 // bytes
	// The resident set split into private anonymous memory (heap, stacks)
	// and file pages (mostly the binary's text, shared between processes).
	anon, file uint64
}

func (u *memUsage) add(pid int) error {
	rss, pss, err := procMem(pid)
	if err != nil {
		return err
	}
	status := fmt.Sprintf("/proc/%d/status", pid)
	anon, err := kBField(status, "RssAnon:")
	if err != nil {
		return err
	}
	file, err := kBField(status, "RssFile:")
	if err != nil {
		return err
	}
	u.procs++
	u.rss += rss
	u.pss += pss
	u.anon += anon
	u.file += file
	return nil
}

// memResult is the memory benchmark of one runtime.
type memResult struct {
	containers int
	runtime    memUsage // the runtime's own processes: the overhead
	command    memUsage // the containers' commands, for context only
	// extra lists runtime processes beyond one shoal-init per container
	// (shoal) or any runc process left (runc).
	extra []int
}

// procMem reads a process's resident set (VmRSS) and proportional set
// (Pss: each shared page divided among the processes mapping it, which is
// fairer to a binary whose text many processes share).
func procMem(pid int) (rss, pss uint64, err error) {
	if rss, err = kBField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:"); err != nil {
		return 0, 0, err
	}
	if pss, err = kBField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:"); err != nil {
		return 0, 0, err
	}
	return rss, pss, nil
}

// kBField reads a "Name:   1234 kB" line and returns bytes.
func kBField(path, name string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == name {
			v, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", path, name, err)
			}
			return v * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s line", path, name)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
}

func argv0(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	a, _, _ := bytes.Cut(b, []byte{0})
	return string(a)
}

// pidsWhere lists the processes for which keep is true.
func pidsWhere(keep func(pid int) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && keep(pid) {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// inCgroup reports whether the process is in a cgroup below the top-level
// cgroup name, in any hierarchy.
func inCgroup(pid int, name string) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	return bytes.Contains(b, []byte(":/"+name+"/"))
}

// liveProcsInCgroupsNamed lists the processes in any cgroup whose path
// contains sub, waiting up to timeout for them to go. Zombies do not count:
// a detached runc container's command is reparented to the machine's init
// when runc exits, and that init reaps it in its own time.
func liveProcsInCgroupsNamed(sub string, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		procs := pidsWhere(func(pid int) bool {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
			return bytes.Contains(b, []byte(sub)) && procState(pid) != "Z"
		})
		if len(procs) == 0 || time.Now().After(deadline) {
			return procs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procState is the one-letter state of a process ("R", "S", "Z" …), or ""
// if it is gone.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+3 > len(b) {
		return ""
	}
	return string(b[i+2 : i+3])
}

// mountsUnder lists the host's mount points below dir.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}
