package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/runtime/cgroups"
)

// cleanup removes the swarm as a user would (`shoal stack rm` of what is
// left, `shoal swarm leave --force`), then whatever that left, then checks
// that no process, cgroup or mount of the run remains; it returns what
// went wrong. It may be called twice; the second call finds nothing.
func (b *bench) cleanup() []string {
	var problems []string
	note := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if b.managerRunning() {
		for _, name := range sortedKeys(b.stacks) {
			if _, err := b.shoal(ctx, "stack", "rm", name); err != nil {
				note("%v", err)
			}
			delete(b.stacks, name)
		}
		if _, err := b.shoal(ctx, "swarm", "leave", "--force"); err != nil {
			note("%v", err)
		}
		select {
		case <-b.mgrExited:
		case <-time.After(60 * time.Second):
			note("shoal-manager (pid %d) still runs 60s after `swarm leave --force`; killing it", b.mgr.Process.Pid)
			_ = b.mgr.Process.Kill()
			<-b.mgrExited
		}
		if !b.mgr.ProcessState.Success() {
			note("shoal-manager ended with %v; the end of its log:\n%s", b.mgr.ProcessState, tail(b.logPath, 20))
		}
	}
	if b.conn != nil {
		_ = b.conn.Close()
		b.conn = nil
	}
	if b.dataDir != "" {
		// After a killed manager: its containers' inits.
		if pids := initsOf(b.dataDir); len(pids) > 0 {
			note("shoal-init processes left after the manager: %v; killing them", pids)
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			waitGone(func() bool { return len(initsOf(b.dataDir)) == 0 }, 5*time.Second)
		}
	}
	for _, d := range []string{b.tmp, b.runDir} {
		if d == "" {
			continue
		}
		if m := mountsUnder(d); len(m) > 0 {
			note("mounts left under %s: %v; unmounting them", d, m)
			for _, p := range slices.Backward(m) {
				_ = syscall.Unmount(p, syscall.MNT_DETACH)
			}
		}
	}
	if b.cgroupParent != "" {
		left := testutil.CgroupDirsContaining(b.cgroupParent)
		if len(left) > 0 {
			note("cgroups left after the swarm was left: %v; removing them", left)
			if err := cgroups.DeleteParent(b.cgroupParent); err != nil {
				note("%v", err)
			}
			for _, p := range testutil.CgroupDirsContaining(b.cgroupParent) {
				if err := testutil.RemoveCgroupTree(p); err != nil {
					note("%v", err)
				}
			}
		}
	}
	if b.cfg.keepLog != "" && b.logPath != "" {
		if err := copyFile(b.cfg.keepLog, b.logPath); err != nil {
			note("keep the manager's log: %v", err)
		} else {
			fmt.Fprintf(os.Stderr, "bench: the manager's log is in %s\n", b.cfg.keepLog)
		}
		b.logPath = ""
	}
	for _, d := range []string{b.runDir, b.tmp} {
		if d != "" {
			if err := os.RemoveAll(d); err != nil {
				note("%v", err)
			}
		}
	}
	b.runDir, b.tmp = "", ""
	testutil.Cleanup()

	// Prove it: nothing of ours may be left.
	if b.dataDir != "" {
		if p := managersOf(b.dataDir); len(p) > 0 {
			note("shoal-manager processes left: %v", p)
		}
		if p := initsOf(b.dataDir); len(p) > 0 {
			note("shoal-init processes left: %v", p)
		}
		if m := mountsUnder(b.dataDir); len(m) > 0 {
			note("mounts left: %v", m)
		}
	}
	if b.cgroupParent != "" {
		if c := testutil.CgroupDirsContaining(b.cgroupParent); len(c) > 0 {
			note("cgroups left: %v", c)
		}
	}
	var netIDs []string
	for _, ids := range b.networks {
		netIDs = append(netIDs, ids...)
	}
	if l := linksOf(netIDs); len(l) > 0 {
		note("network links of the benchmark's networks left: %v", l)
	}
	return problems
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func waitGone(gone func() bool, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for !gone() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// initsOf lists the live shoal-init processes of containers under dataDir
// (the runtime starts them as `shoal-init <container dir>`).
func initsOf(dataDir string) []int {
	return pidsWhere(func(pid int) bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return bytes.HasPrefix(b, []byte("shoal-init\x00"+dataDir+"/")) && procState(pid) != "Z"
	})
}

// managersOf lists the live shoal-manager processes with dataDir.
func managersOf(dataDir string) []int {
	return pidsWhere(func(pid int) bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(b), "\x00")
		return filepath.Base(args[0]) == "shoal-manager" && slices.Contains(args, dataDir) && procState(pid) != "Z"
	})
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

func argv0(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	a, _, _ := bytes.Cut(b, []byte{0})
	return string(a)
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
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

// mountsUnder lists the host's mount points below dir, dir included.
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
