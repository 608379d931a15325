package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// killTimeout bounds Kill: a process in uninterruptible sleep (D state, e.g.
// on a dead NFS server) can outlive SIGKILL indefinitely.
const killTimeout = 5 * time.Second

// Kill sends SIGKILL to every process in the cgroup and waits, at most 5s,
// until it is empty. Killed children of the caller leave the cgroup at once
// but stay zombies until the caller waits for them.
func (c *Cgroup) Kill() error {
	deadline := time.Now().Add(killTimeout)
	for {
		pids, err := c.Procs()
		if err != nil {
			return fmt.Errorf("kill cgroup %s: %w", c.name, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill cgroup %s: %w: processes %v still running after %v", c.name, ErrPopulated, pids, killTimeout)
		}
		if err := c.signalAll(); err != nil {
			return fmt.Errorf("kill cgroup %s: %w", c.name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// signalAll kills every process once. The kernel's cgroup.kill (v2, and the
// cgroup2 side of a hybrid host, Linux 5.14+) does it atomically. Otherwise
// the cgroup is frozen first, so that no process forks between the listing
// and the signal; frozen processes die when thawed.
func (c *Cgroup) signalAll() error {
	for _, d := range c.dirs {
		if d.h.unified {
			err := writeFile(filepath.Join(d.path, "cgroup.kill"), "1")
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	thaw := c.freeze()
	defer thaw()
	pids, err := c.Procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill process %d: %w", pid, err)
		}
	}
	return nil
}

// freeze stops the cgroup's processes, best effort (a half-frozen cgroup
// still lets the signals through), and returns the function that thaws it.
func (c *Cgroup) freeze() (thaw func()) {
	for _, d := range c.dirs {
		var state, frozen, thawed string
		switch {
		case d.h.has("freezer"):
			state, frozen, thawed = "freezer.state", "FROZEN", "THAWED"
		case c.mode == "v2":
			state, frozen, thawed = "cgroup.freeze", "1", "0"
		default:
			continue
		}
		p := filepath.Join(d.path, state)
		if writeFile(p, frozen) != nil {
			return func() {}
		}
		waitFrozen(d.path, d.h.unified)
		return func() { _ = writeFile(p, thawed) }
	}
	return func() {}
}

// waitFrozen polls, for up to 100ms, until the freezer reports the cgroup
// frozen; a process stuck in the kernel may keep it "FREEZING" for good.
func waitFrozen(dir string, v2 bool) {
	for range 20 {
		if v2 {
			kv, err := readKV(filepath.Join(dir, "cgroup.events"))
			if err != nil || kv["frozen"] == 1 {
				return
			}
		} else {
			s, err := readString(filepath.Join(dir, "freezer.state"))
			if err != nil || strings.TrimSpace(s) == "FROZEN" {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}
