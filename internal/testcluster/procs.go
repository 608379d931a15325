package testcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// proc is what the harness reads of a process from /proc.
type proc struct {
	pid, ppid int
	start     uint64 // start time in clock ticks since boot, which tells a reused pid
	netns     uint64 // inode of its network namespace; 0 when unreadable (a zombie)
	zombie    bool
	args      []string
}

func (p proc) String() string {
	cmd := strings.Join(p.args, " ")
	if len(cmd) > 120 {
		cmd = cmd[:120] + "…"
	}
	return fmt.Sprintf("process %d (%s)", p.pid, cmd)
}

// scanProcs reads every process of the host. A process that exits while
// it is read is left out.
func scanProcs() []proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		p, ok := readStat(pid)
		if !ok {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join(dir, "ns", "net"), &st) == nil {
			p.netns = st.Ino
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			p.args = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		}
		out = append(out, p)
	}
	return out
}

// scope says which processes belong to a node: those in one of the
// network namespaces netns (the node's own and those pinned under its
// dirs, which its containers use), those whose arguments name one of
// dirs (a container's init told where its bundle is), and the
// descendants of either.
type scope struct {
	netns map[uint64]bool
	dirs  []string
}

func (s scope) merge(o scope) scope {
	out := scope{netns: map[uint64]bool{}, dirs: slices.Concat(s.dirs, o.dirs)}
	for _, m := range []map[uint64]bool{s.netns, o.netns} {
		for k := range m {
			out.netns[k] = true
		}
	}
	return out
}

// members picks the living (not zombie) processes of procs that belong
// to s. The test process and its ancestors never do, whatever their
// arguments say.
func (s scope) members(procs []proc) []proc {
	spared := map[int]bool{}
	byPid := map[int]proc{}
	for _, p := range procs {
		byPid[p.pid] = p
	}
	for pid := os.Getpid(); pid > 1 && !spared[pid]; pid = byPid[pid].ppid {
		spared[pid] = true
	}
	in := map[int]bool{}
	for _, p := range procs {
		if spared[p.pid] || p.pid <= 2 {
			continue
		}
		if p.netns != 0 && s.netns[p.netns] || s.mentionsDir(p.args) {
			in[p.pid] = true
		}
	}
	// Descendants, to a fixed point: /proc is not in tree order.
	for grew := true; grew; {
		grew = false
		for _, p := range procs {
			if !in[p.pid] && !spared[p.pid] && in[p.ppid] {
				in[p.pid], grew = true, true
			}
		}
	}
	var out []proc
	for _, p := range procs {
		if in[p.pid] && !p.zombie {
			out = append(out, p)
		}
	}
	return out
}

// mentionsDir reports whether an argument names one of s.dirs or a path
// under it ("/d/n1" must not match "/d/n10").
func (s scope) mentionsDir(args []string) bool {
	for _, a := range args {
		for _, d := range s.dirs {
			for rest := a; ; {
				i := strings.Index(rest, d)
				if i < 0 {
					break
				}
				rest = rest[i+len(d):]
				if rest == "" || !isNameByte(rest[0]) {
					return true
				}
			}
		}
	}
	return false
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}

// killScope kills with SIGKILL every process that belongs to the scope
// that sc returns, again and again (a dying parent may have forked),
// until none is left or the deadline passes. sc is asked afresh each
// round because namespaces pinned under a node's dirs are found through
// the mount table.
func killScope(sc func() scope, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		left := sc().members(scanProcs())
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var names []string
			for _, p := range left {
				names = append(names, p.String())
			}
			return fmt.Errorf("still running %v after SIGKILL: %s", d, strings.Join(names, ", "))
		}
		for _, p := range left {
			if err := p.kill(); err != nil {
				return err
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill sends SIGKILL to p unless its pid now names another process.
func (p proc) kill() error {
	fd, err := unix.PidfdOpen(p.pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kill %s: %w", p, err)
	}
	defer unix.Close(fd)
	// The pidfd holds the process that has the pid now; it is p if it
	// started when p did.
	if start, ok := startTime(p.pid); !ok || start != p.start {
		return nil
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %s: %w", p, err)
	}
	return nil
}

// readStat reads the state, parent and start time of process pid.
func readStat(pid int) (proc, bool) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return proc{}, false
	}
	// The command name in parentheses may hold anything, even ")".
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid, zombie: f[0] == "Z" || f[0] == "X"}
	var err1, err2 error
	p.ppid, err1 = strconv.Atoi(f[1])
	p.start, err2 = strconv.ParseUint(f[19], 10, 64)
	return p, err1 == nil && err2 == nil
}

// startTime reads the start time of process pid.
func startTime(pid int) (uint64, bool) {
	p, ok := readStat(pid)
	return p.start, ok
}
