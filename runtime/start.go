package runtime

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/cgroups"
	"github.com/shoal-dev/shoal/runtime/spec"
)

// startTimeout bounds how long the init may take to build the container.
const startTimeout = 60 * time.Second

// Start starts a created or exited container and returns once its command
// runs (or failed to start, with the reason).
func (r *Runtime) Start(ref string) error {
	c, err := r.lookup(ref)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c.State == Running {
		return fmt.Errorf("%w: container %s is already running", ErrConflict, c.c.Name)
	}
	if err := r.start(c); err != nil {
		c.c.Error = err.Error()
		_ = c.save()
		return fmt.Errorf("start container %s: %w", c.c.Name, err)
	}
	return nil
}

func (r *Runtime) cgroupResources(s Spec) cgroups.Resources {
	res := cgroups.Resources{
		MemoryLimit:       s.Resources.MemoryLimit,
		MemoryReservation: s.Resources.MemoryReservation,
		PidsLimit:         s.Resources.PidsLimit,
	}
	if s.Resources.NanoCPUs > 0 {
		res.CPUQuota, res.CPUPeriod = cgroups.CPUs(float64(s.Resources.NanoCPUs) / 1e9)
	}
	return res
}

// start runs with c.mu held.
func (r *Runtime) start(c *ctr) (err error) {
	_ = os.Remove(filepath.Join(c.dir, spec.ExitFile))
	cg, err := cgroups.Create(r.opts.CgroupParent, c.c.ID, r.cgroupResources(c.c.Spec))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = cg.Kill()
			_ = cg.Delete()
		}
	}()

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_ = unix.SetNonblock(fds[0], true)
	parent := os.NewFile(uintptr(fds[0]), "init-sync")
	child := os.NewFile(uintptr(fds[1]), "init-sync-child")
	defer parent.Close()

	initLog, err := os.OpenFile(filepath.Join(c.dir, "init.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		child.Close()
		return err
	}
	cmd := &exec.Cmd{
		Path: r.opts.InitPath,
		Args: []string{"shoal-init", c.dir},
		// One P is plenty for an init and keeps its threads and memory down.
		Env:        []string{"GOMAXPROCS=1"},
		Stdout:     initLog,
		Stderr:     initLog,
		ExtraFiles: []*os.File{child},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
			Setsid:     true,
		},
	}
	net := c.c.Spec.Network
	switch net.Mode {
	case "", NetworkNone:
		cmd.SysProcAttr.Cloneflags |= unix.CLONE_NEWNET
		err = cmd.Start()
	case NetworkHost:
		err = cmd.Start()
	case NetworkNamespace:
		err = startInNetns(cmd, net.Path)
	}
	child.Close()
	initLog.Close()
	if err != nil {
		return fmt.Errorf("start init: %w", err)
	}
	pid := cmd.Process.Pid
	fail := func(e error) error {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return e
	}
	if err := cg.AddProc(pid); err != nil {
		return fail(err)
	}
	// The init waits for this byte so that its command is born inside the
	// cgroup. If the init already failed, the write fails and the reason
	// is in its reply.
	_, _ = parent.Write([]byte{1})
	_ = parent.SetReadDeadline(time.Now().Add(startTimeout))
	line, rerr := bufio.NewReader(parent).ReadBytes('\n')
	var rep spec.StartReply
	if rerr != nil || json.Unmarshal(line, &rep) != nil {
		_ = fail(nil)
		if msg := lastLine(filepath.Join(c.dir, "init.log")); msg != "" {
			return errors.New(msg)
		}
		return fmt.Errorf("init did not report: %v", rerr)
	}
	if rep.Error != "" {
		return fail(errors.New(rep.Error))
	}

	c.c.State = Running
	c.c.Pid = pid
	c.c.PidStart = procStartTime(pid)
	c.c.StartedAt = time.Now().UTC()
	c.c.FinishedAt = time.Time{}
	c.c.ExitCode = 0
	c.c.OOMKilled = false
	c.c.Error = ""
	c.exited = make(chan struct{})
	if err := c.save(); err != nil {
		return fail(err)
	}
	exited := c.exited
	go func() {
		_ = cmd.Wait()
		r.finish(c, exited)
	}()
	return nil
}

// startInNetns starts cmd inside the network namespace at path. Namespaces
// are per thread; the child inherits the namespaces of the thread that
// forks it, so the fork happens on a locked thread that joined the
// namespace, and that thread is thrown away afterwards instead of going
// back to the pool in the wrong namespace.
func startInNetns(cmd *exec.Cmd, path string) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("network namespace %s: %w", path, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("join network namespace %s: %w", path, err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimPrefix(lines[len(lines)-1], "shoal-init: ")
}

// procStartTime reads a process's start time (clock ticks since boot), which
// tells a re-adopted pid from a reused one.
func procStartTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}
