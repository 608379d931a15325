// Package cgroups gives each container a cgroup with its cpu, memory and pids
// limits and Docker's default device rules, on cgroup v1, hybrid and v2
// hosts. A container's cgroup is <parent>/<id> ("shoal/<id>") in every
// hierarchy shoal uses, found from /proc/self/mountinfo rather than assumed,
// so that hosts that mount cpu and cpuacct apart or together both work.
//
// On v1 the package writes the interface files itself (see V1Settings); on
// v2 it writes them too (see V2Settings) and uses containerd's cgroup2
// package for the eBPF device filter and for statistics.
package cgroups

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrPopulated classifies a failure to remove a cgroup that still holds
// processes (or, for DeleteParent, containers' cgroups).
var ErrPopulated = errors.New("cgroup is not empty")

// Cgroup is one container's cgroup: the directory <parent>/<id> in each
// hierarchy shoal uses. Its methods hold no state beyond those paths, so a
// Cgroup may be used from several goroutines, and Load recreates an
// identical one after a restart.
type Cgroup struct {
	name string // "<parent>/<id>", for errors
	mode string
	dirs []dir
}

type dir struct {
	h    hierarchy
	path string
}

// checkName refuses names that would escape the hierarchy or nest oddly.
// parent may have several components ("shoal/node-1"); id may not.
func checkName(parent, id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("invalid cgroup id %q: want one path component", id)
	}
	if parent == "" || filepath.IsAbs(parent) || filepath.Clean(parent) != parent ||
		parent == "." || strings.ContainsRune(parent, 0) ||
		slices.Contains(strings.Split(parent, "/"), "..") {
		return fmt.Errorf("invalid cgroup parent %q: want a clean relative path", parent)
	}
	return nil
}

func newCgroup(l *layout, parent, id string) *Cgroup {
	c := &Cgroup{name: parent + "/" + id, mode: l.mode}
	for _, h := range l.hierarchies {
		c.dirs = append(c.dirs, dir{h: h, path: filepath.Join(h.mount, parent, id)})
	}
	return c
}

// Create makes the cgroup <parent>/<id> (parent like "shoal"; tests pass
// another name) in every v1 hierarchy shoal uses, or in the unified
// hierarchy on a pure v2 host, and applies r. It also applies Docker's
// default device rules (DefaultDevices), so no host device is reachable. An
// existing cgroup of that name is an error wrapping fs.ErrExist. A failure
// removes whatever it created.
func Create(parent, id string, r Resources) (_ *Cgroup, err error) {
	name := parent + "/" + id
	defer func() {
		if err != nil {
			err = fmt.Errorf("create cgroup %s: %w", name, err)
		}
	}()
	if err := checkName(parent, id); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	l, err := hostLayout()
	if err != nil {
		return nil, err
	}
	c := newCgroup(l, parent, id)

	var created []string
	defer func() {
		if err != nil {
			for _, p := range slices.Backward(created) {
				// Best effort: an error here would hide the one that
				// matters, and a parent another Create is using stays.
				_ = unix.Rmdir(p)
			}
		}
	}()
	for _, d := range c.dirs {
		made, err := makeDir(d.h, parent, id)
		created = append(created, made...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.h.name(), err)
		}
	}
	if err := c.configure(r, true); err != nil {
		return nil, err
	}
	return c, nil
}

// makeDir creates <parent>/<id> in one hierarchy with whatever parents are
// missing, and returns what it created, outermost first.
func makeDir(h hierarchy, parent, id string) (created []string, err error) {
	p := h.mount
	comps := append(strings.Split(parent, "/"), id)
	for i, comp := range comps {
		if h.unified {
			// Each level must pass the controllers on before its child
			// has their files. On a hybrid host none is available, and
			// this does nothing.
			if err := enableControllers(p); err != nil {
				return created, err
			}
		}
		p = filepath.Join(p, comp)
		last := i == len(comps)-1
		switch err := os.Mkdir(p, 0o755); {
		case err == nil:
			created = append(created, p)
		case errors.Is(err, fs.ErrExist) && !last:
		case errors.Is(err, fs.ErrExist):
			return created, fmt.Errorf("%s: %w", p, fs.ErrExist)
		default:
			return created, err
		}
		if h.has("cpuset") {
			if err := copyCpuset(p); err != nil {
				return created, err
			}
		}
	}
	return created, nil
}

// copyCpuset fills an empty cpuset.cpus or cpuset.mems from the parent: a v1
// cpuset cgroup starts empty, and the kernel refuses to move a process into
// it (ENOSPC) until both are set.
func copyCpuset(p string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := readString(filepath.Join(p, f))
		if err != nil {
			return err
		}
		if cur != "" {
			continue
		}
		v, err := readString(filepath.Join(filepath.Dir(p), f))
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(p, f), v); err != nil {
			return err
		}
	}
	return nil
}

// enableControllers turns on, in dir's cgroup.subtree_control, those of
// v2Controllers that dir has and has not yet passed on.
func enableControllers(dir string) error {
	avail, err := readString(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	on, err := readString(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	var add []string
	for _, c := range v2Controllers {
		if slices.Contains(strings.Fields(avail), c) && !slices.Contains(strings.Fields(on), c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(add, " "))
}

// configure writes r and, when devices is set (at creation only: v1 device
// rules can only be narrowed once processes run), the device rules.
func (c *Cgroup) configure(r Resources, devices bool) error {
	if c.mode == "v2" {
		d := c.dirs[0]
		if err := apply(d.path, V2Settings(r)); err != nil {
			return err
		}
		if devices {
			return setDevicesV2(d.path, DefaultDevices())
		}
		return nil
	}
	all := V1Settings(r)
	if devices {
		all = append(all, V1DeviceSettings(DefaultDevices())...)
	}
	for _, d := range c.dirs {
		var mine []Setting
		for _, s := range all {
			if d.h.has(s.Controller) {
				mine = append(mine, s)
			}
		}
		if err := apply(d.path, mine); err != nil {
			return fmt.Errorf("%s: %w", d.h.name(), err)
		}
	}
	return nil
}

// Load opens an existing cgroup, after a restart of the process that created
// it. The error wraps fs.ErrNotExist when the cgroup is absent from a
// hierarchy it needs.
func Load(parent, id string) (*Cgroup, error) {
	name := parent + "/" + id
	if err := checkName(parent, id); err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", name, err)
	}
	l, err := hostLayout()
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", name, err)
	}
	c := newCgroup(l, parent, id)
	dirs := c.dirs[:0]
	for _, d := range c.dirs {
		if _, err := os.Stat(d.path); err != nil {
			if errors.Is(err, fs.ErrNotExist) && !d.h.required {
				continue // a hierarchy mounted since the cgroup was made
			}
			return nil, fmt.Errorf("load cgroup %s: %s: %w", name, d.h.name(), err)
		}
		dirs = append(dirs, d)
	}
	c.dirs = dirs
	return c, nil
}

// AddProc moves the process pid into the cgroup in every hierarchy. Its
// children forked afterwards are born inside.
func (c *Cgroup) AddProc(pid int) error {
	for _, d := range c.dirs {
		if err := writeProcs(d.path, pid); err != nil {
			return fmt.Errorf("add process %d to cgroup %s: %s: %w", pid, c.name, d.h.name(), err)
		}
	}
	return nil
}

// writeProcs retries EINVAL, which the kernel returns for a task still being
// forked (TASK_NEW), as runc does.
func writeProcs(dir string, pid int) error {
	var err error
	for range 5 {
		err = writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid))
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Procs lists, sorted, the processes in the cgroup and in any cgroup below
// it, in any hierarchy. A cgroup already removed holds none.
func (c *Cgroup) Procs() ([]int, error) {
	var all []int
	for _, d := range c.dirs {
		sub, err := subdirs(d.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("processes of cgroup %s: %w", c.name, err)
		}
		for _, s := range sub {
			pids, err := readPids(s)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("processes of cgroup %s: %w", c.name, err)
			}
			all = append(all, pids...)
		}
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

// Update applies r to the running cgroup. Zero fields lift their limits.
func (c *Cgroup) Update(r Resources) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("update cgroup %s: %w", c.name, err)
	}
	if err := c.configure(r, false); err != nil {
		return fmt.Errorf("update cgroup %s: %w", c.name, err)
	}
	return nil
}

// OOMKilled reports whether the kernel OOM-killed a process in this cgroup
// (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).
func (c *Cgroup) OOMKilled() (bool, error) {
	file, controller := "memory.oom_control", "memory"
	if c.mode == "v2" {
		file, controller = "memory.events", ""
	}
	p, err := c.file(controller, file)
	if err == nil {
		var kv map[string]uint64
		if kv, err = readKV(p); err == nil {
			return kv["oom_kill"] > 0, nil
		}
	}
	return false, fmt.Errorf("oom state of cgroup %s: %w", c.name, err)
}

// file returns the path of an interface file: in the hierarchy that has
// controller on v1, in the one directory on v2.
func (c *Cgroup) file(controller, name string) (string, error) {
	for _, d := range c.dirs {
		if c.mode == "v2" || d.h.has(controller) {
			return filepath.Join(d.path, name), nil
		}
	}
	return "", fmt.Errorf("no %s hierarchy: %w", controller, fs.ErrNotExist)
}

// Delete removes the cgroup from every hierarchy, and any cgroups a
// container made below it. Gone already is fine. It fails, with an error
// wrapping ErrPopulated, if processes remain: Kill first.
func (c *Cgroup) Delete() error {
	pids, err := c.Procs()
	if err != nil {
		return fmt.Errorf("delete cgroup %s: %w", c.name, err)
	}
	if len(pids) > 0 {
		return fmt.Errorf("delete cgroup %s: %w: processes %v", c.name, ErrPopulated, pids)
	}
	var errs []error
	for _, d := range c.dirs {
		sub, err := subdirs(d.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range sub {
			if err := rmdir(s); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", c.name, err)
	}
	return nil
}

// DeleteParent removes the parent cgroup (and its own empty parents, for a
// parent like "shoal/node-1") from every hierarchy, as `swarm leave` and
// tests do once all containers are gone. Gone already is fine; a parent
// that still has containers' cgroups is an error wrapping ErrPopulated.
func DeleteParent(parent string) error {
	if err := checkName(parent, "x"); err != nil {
		return fmt.Errorf("delete cgroup parent %s: %w", parent, err)
	}
	l, err := hostLayout()
	if err != nil {
		return fmt.Errorf("delete cgroup parent %s: %w", parent, err)
	}
	var errs []error
	for _, h := range l.hierarchies {
		p := filepath.Join(h.mount, parent)
		entries, err := os.ReadDir(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if slices.ContainsFunc(entries, fs.DirEntry.IsDir) {
			errs = append(errs, fmt.Errorf("%s: %w", p, ErrPopulated))
			continue
		}
		if err := rmdir(p); err != nil {
			errs = append(errs, err)
			continue
		}
		for up := filepath.Dir(p); up != h.mount && strings.HasPrefix(up, h.mount); up = filepath.Dir(up) {
			if unix.Rmdir(up) != nil {
				break // shared with another parent, or not ours
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete cgroup parent %s: %w", parent, err)
	}
	return nil
}

// Paths lists the cgroup's directories, one per hierarchy, for tests and
// diagnostics.
func (c *Cgroup) Paths() []string {
	out := make([]string, len(c.dirs))
	for i, d := range c.dirs {
		out[i] = d.path
	}
	return out
}
