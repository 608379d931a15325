package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/logs"
	"github.com/shoal-dev/shoal/runtime/rootfs"
)

// followDrain is how long a follower keeps reading after the container
// has exited, so that the last lines the init flushed are delivered.
const followDrain = 200 * time.Millisecond

// Logs calls fn for the container's log entries. With Follow it goes on
// until ctx is done or the container has exited.
func (r *Runtime) Logs(ctx context.Context, ref string, opts logs.ReadOptions, fn func(logs.Entry) error) error {
	c, err := r.lookup(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running, ch := c.c.State == Running, c.exited
	c.mu.Unlock()
	path := filepath.Join(c.dir, logFile)
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return nil
	}
	if !opts.Follow || !running {
		opts.Follow = false
		return logs.Read(ctx, path, opts, fn)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ch:
			time.Sleep(followDrain)
			cancel()
		case <-fctx.Done():
		}
	}()
	return logs.Read(fctx, path, opts, fn)
}

// Stats reads a running container's cgroup counters.
func (r *Runtime) Stats(ref string) (*Stats, error) {
	c, err := r.lookup(ref)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	running, id, name := c.c.State == Running, c.c.ID, c.c.Name
	c.mu.Unlock()
	if !running {
		return nil, fmt.Errorf("%w: container %s is not running", ErrNotRunning, name)
	}
	cg, err := cgroups.Load(r.opts.CgroupParent, id)
	if err != nil {
		return nil, err
	}
	return cg.Stats()
}

// Top lists the container's processes with their host pids.
func (r *Runtime) Top(ref string) ([]Process, error) {
	c, err := r.lookup(ref)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	running, id, name := c.c.State == Running, c.c.ID, c.c.Name
	c.mu.Unlock()
	if !running {
		return nil, fmt.Errorf("%w: container %s is not running", ErrNotRunning, name)
	}
	cg, err := cgroups.Load(r.opts.CgroupParent, id)
	if err != nil {
		return nil, err
	}
	pids, err := cg.Procs()
	if err != nil {
		return nil, err
	}
	var out []Process
	for _, pid := range pids {
		p := Process{Pid: pid}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 {
					continue
				}
				switch f[0] {
				case "PPid:":
					p.PPid, _ = strconv.Atoi(f[1])
				case "Uid:":
					p.UID, _ = strconv.Atoi(f[1])
				}
			}
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			p.Cmd = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		}
		out = append(out, p)
	}
	return out, nil
}

// Diff lists what the container changed in its root filesystem.
func (r *Runtime) Diff(ref string) ([]rootfs.Change, error) {
	c, err := r.lookup(ref)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	imageID := c.c.ImageID
	c.mu.Unlock()
	img, err := r.images.Get(imageID)
	if err != nil {
		return nil, err
	}
	layers, err := r.images.LayerDirs(img)
	if err != nil {
		return nil, err
	}
	changes, err := rootfs.Diff(filepath.Join(c.dir, "upper"), layers)
	if err != nil {
		return nil, err
	}
	// The runtime's own mount points are not the container's changes;
	// Docker leaves them out too.
	out := changes[:0]
	for _, ch := range changes {
		switch ch.Path {
		case "/etc/hostname", "/etc/hosts", "/etc/resolv.conf":
			continue
		}
		out = append(out, ch)
	}
	return out, nil
}
