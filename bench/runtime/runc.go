package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// newRuncID names a runc container; the run's random suffix is in it so
// that leftovers are easy to tell.
func (b *bench) newRuncID() string {
	b.runcSeq++
	id := fmt.Sprintf("bench-%s-%d", b.rand, b.runcSeq)
	if b.runcIDs == nil {
		b.runcIDs = map[string]bool{}
	}
	b.runcIDs[id] = true
	return id
}

// runcBundle writes the bundle of one container: `runc spec`'s default
// config with the command, no terminal, the shared rootfs (writable, as
// shoal's), and a cgroup under the run's parent. Each container needs its
// own bundle because the cgroup path is in the config.
func (b *bench) runcBundle(id string, args []string) (string, error) {
	s := *b.template
	p, r, l := *s.Process, *s.Root, *s.Linux
	p.Args, p.Terminal = args, false
	r.Path, r.Readonly = b.rootfsDir, false
	l.CgroupsPath = "/" + b.runcParent + "/" + id
	s.Process, s.Root, s.Linux = &p, &r, &l
	raw, err := json.MarshalIndent(&s, "", "\t")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(b.bundles, id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o600)
}

// runc is a runc command on the run's own state dir, in its own process
// group so that a Ctrl-C in the terminal is handled by cleanup, not by
// runc forwarding it.
func (b *bench) runc(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, b.runcPath, append([]string{"--root", b.runcRoot}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// runcDelete deletes a container and its bundle; a container runc does not
// know (`runc run` removed it when it ended) is fine.
func (b *bench) runcDelete(ctx context.Context, id string) error {
	out, err := b.runc(ctx, "delete", "-f", id).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "does not exist") {
		return fmt.Errorf("runc delete -f %s: %v: %s", id, err, bytes.TrimSpace(out))
	}
	if err := os.RemoveAll(filepath.Join(b.bundles, id)); err != nil {
		return err
	}
	delete(b.runcIDs, id)
	return nil
}

// runcFirstOutput times `runc run` of `helper echo hi` from its launch
// until "hi" arrives on its stdout pipe.
func (b *bench) runcFirstOutput(ctx context.Context) (d time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	id := b.newRuncID()
	bundle, err := b.runcBundle(id, echoArgs)
	if err != nil {
		return 0, err
	}
	defer b.runcCleanup(id, &err)
	stderr, err := os.Create(filepath.Join(bundle, "stderr"))
	if err != nil {
		return 0, err
	}
	defer stderr.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer pr.Close()
	cmd := b.runc(ctx, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = pw, stderr
	got := make(chan time.Time, 1)
	t0 := time.Now()
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return 0, fmt.Errorf("runc run: %w", err)
	}
	go func() {
		var out []byte
		buf := make([]byte, 512)
		for {
			n, err := pr.Read(buf)
			at := time.Now()
			out = append(out, buf[:n]...)
			if bytes.Contains(out, []byte(want)) {
				got <- at
				return
			}
			if err != nil {
				close(got)
				return
			}
		}
	}()
	at, ok := <-got
	werr := cmd.Wait()
	if !ok || werr != nil {
		return 0, fmt.Errorf("runc run %s: output seen: %v, exit: %v%s", id, ok, werr, fileText(stderr.Name()))
	}
	return at.Sub(t0), nil
}

// runcTrue times `runc run` of true until runc exits; when not detached,
// runc tears the container down itself before it exits.
func (b *bench) runcTrue(ctx context.Context) (d time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	id := b.newRuncID()
	bundle, err := b.runcBundle(id, trueArgs)
	if err != nil {
		return 0, err
	}
	defer b.runcCleanup(id, &err)
	out, err := os.Create(filepath.Join(bundle, "output"))
	if err != nil {
		return 0, err
	}
	defer out.Close()
	cmd := b.runc(ctx, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = out, out
	t0 := time.Now()
	err = cmd.Run()
	d = time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("runc run %s: %w%s", id, err, fileText(out.Name()))
	}
	return d, nil
}

// runcCleanup deletes a container after a run (not timed).
func (b *bench) runcCleanup(id string, errp *error) {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	if err := b.runcDelete(ctx, id); err != nil && *errp == nil {
		*errp = err
	}
}

// runcMemory starts k detached containers running `helper sleep inf`
// (`runc run -d`, stdio on /dev/null) and measures what runc leaves
// running per container besides the command itself.
func (b *bench) runcMemory(ctx context.Context, k int) (m memResult, err error) {
	var ids []string
	defer func() {
		for _, id := range ids {
			b.runcCleanup(id, &err)
		}
	}()
	for i := 0; i < k; i++ {
		id := b.newRuncID()
		bundle, err := b.runcBundle(id, sleepArgs)
		if err != nil {
			return m, err
		}
		ids = append(ids, id)
		logFile := filepath.Join(bundle, "runc.log")
		// nil stdio is /dev/null for exec.Cmd; runc's own errors go to --log.
		cmd := exec.CommandContext(ctx, b.runcPath, "--root", b.runcRoot, "--log", logFile, "run", "-d", "--bundle", bundle, id)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Run(); err != nil {
			return m, fmt.Errorf("runc run -d %s: %w%s", id, err, fileText(logFile))
		}
	}
	if err := settle(ctx); err != nil {
		return m, err
	}
	m.containers = k
	commands := map[int]bool{}
	for _, id := range ids {
		out, err := b.runc(ctx, "state", id).Output()
		if err != nil {
			return m, fmt.Errorf("runc state %s: %w", id, err)
		}
		var st struct {
			Pid    int    `json:"pid"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return m, fmt.Errorf("runc state %s: %w", id, err)
		}
		if st.Status != "running" || st.Pid <= 0 {
			return m, fmt.Errorf("runc container %s is %s (pid %d), not running", id, st.Status, st.Pid)
		}
		if err := m.command.add(st.Pid); err != nil {
			return m, fmt.Errorf("runc: command of %s: %w", id, err)
		}
		commands[st.Pid] = true
	}
	// What runc leaves per container: any runc process (runc itself, or
	// `runc init` before it execs the command) still alive.
	self := os.Getpid()
	for _, pid := range pidsWhere(func(pid int) bool {
		return pid != self && !commands[pid] && isRuncProcess(pid) &&
			(strings.Contains(cmdline(pid), b.rand) || inCgroup(pid, b.runcParent))
	}) {
		if err := m.runtime.add(pid); err == nil {
			m.extra = append(m.extra, pid)
		}
	}
	return m, nil
}

// isRuncProcess tells runc by its executable: the installed binary, or the
// copy of it ("runc_cloned") that some versions re-execute as `runc init`.
func isRuncProcess(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	return filepath.Base(exe) == "runc" || strings.Contains(exe, "runc_cloned")
}

func fileText(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	return ": " + strings.TrimSpace(string(b))
}
