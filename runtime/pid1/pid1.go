// Package pid1 is shoal's in-container init: the first process of every
// container. It builds the container's filesystem (overlay rootfs, /proc,
// /dev, /sys, volumes, binds, masked paths) inside the new mount namespace,
// pivots into it, drops capabilities, starts the command, and then stays as
// PID 1: it reaps every zombie (so a daemon that double-forks cannot leave
// them behind), forwards signals to the command, writes the command's stdout
// and stderr to the rotated log, serves exec requests on a unix socket, and
// records the exit status. Because it owns the logs and the exit record, a
// container keeps running and logging while the agent that started it is
// restarted.
//
// The runtime starts it as `shoal-init BUNDLE` with a socket on fd 3 (see
// package spec for the protocol).
package pid1

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/logs"
	"github.com/shoal-dev/shoal/runtime/spec"
)

func init() {
	// Mount, pivot_root and fork must happen on one thread: namespaces and
	// the root directory are per thread until the process is single again.
	goruntime.LockOSThread()
}

// syncFD is the descriptor on which the runtime passes its end of the start
// handshake.
const syncFD = 3

// Main runs the init and never returns.
func Main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: shoal-init BUNDLE (started by the shoal runtime, not by hand)")
		os.Exit(2)
	}
	sync := os.NewFile(syncFD, "sync")
	code, err := run(os.Args[1], sync)
	if err != nil {
		// The runtime reads the reason from the sync socket; stderr goes to
		// the container's init.log for whoever debugs it later.
		reply(sync, spec.StartReply{Error: err.Error()})
		fmt.Fprintln(os.Stderr, "shoal-init:", err)
		os.Exit(127)
	}
	os.Exit(code)
}

func reply(w *os.File, r spec.StartReply) {
	b, _ := json.Marshal(r)
	_, _ = w.Write(append(b, '\n'))
}

type initProc struct {
	cfg      spec.Config
	bundle   string
	bundleFD int
	// inBundle turns a file name in the bundle into a path that still works
	// after pivot_root, through the descriptor kept open on the bundle.
	inBundle func(name string) string

	log *logs.Writer

	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
	mainPid int
}

func run(bundle string, syncFile *os.File) (int, error) {
	unix.Umask(0)
	p := &initProc{bundle: bundle, waiters: map[int]chan unix.WaitStatus{}}
	b, err := os.ReadFile(filepath.Join(bundle, spec.ConfigFile))
	if err != nil {
		return 0, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &p.cfg); err != nil {
		return 0, fmt.Errorf("parse config: %w", err)
	}
	cfg := &p.cfg

	fd, err := unix.Open(bundle, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open bundle: %w", err)
	}
	p.bundleFD = fd
	p.inBundle = func(name string) string { return fmt.Sprintf("/proc/self/fd/%d/%s", fd, name) }

	// The exec socket is bound on the host side before pivot_root; the
	// listening descriptor keeps working inside.
	ln := -1
	if cfg.ExecSocket != "" {
		if ln, err = listenUnix(cfg.ExecSocket); err != nil {
			return 0, fmt.Errorf("exec socket: %w", err)
		}
	}

	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return 0, fmt.Errorf("set hostname: %w", err)
		}
	}
	if err := setupRootfs(cfg); err != nil {
		return 0, err
	}
	if err := pivotRoot(cfg.Rootfs.Target); err != nil {
		return 0, err
	}
	if err := maskPaths(cfg.MaskedPaths); err != nil {
		return 0, err
	}
	if err := readonlyPaths(cfg.ReadonlyPaths); err != nil {
		return 0, err
	}

	if p.log, err = logs.NewWriter(p.inBundle(filepath.Base(cfg.Log.Path)), logs.Options{MaxSize: cfg.Log.MaxSize, MaxFiles: cfg.Log.MaxFiles}); err != nil {
		return 0, fmt.Errorf("open log: %w", err)
	}

	cred, home, err := lookupUser(cfg.User)
	if err != nil {
		return 0, err
	}
	env := withDefaultEnv(cfg.Env, home)
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	// Docker creates a missing working directory.
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return 0, fmt.Errorf("working directory %s: %w", cwd, err)
	}
	argv0, err := lookPath(cfg.Args, env)
	if err != nil {
		return 0, err
	}

	if err := dropPrivileges(cfg.Capabilities, cfg.NoNewPrivileges); err != nil {
		return 0, err
	}
	unix.Umask(0o022)

	sigs := notifySignals()

	// Wait until the runtime has put this process into the container's
	// cgroup, so that the command is born inside it.
	var one [1]byte
	if _, err := syncFile.Read(one[:]); err != nil {
		return 0, fmt.Errorf("wait for runtime: %w", err)
	}

	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	devnull, err := os.Open("/dev/null")
	if err != nil {
		return 0, err
	}
	var copies sync.WaitGroup
	copies.Add(2)
	go func() { defer copies.Done(); _ = p.log.CopyStream("stdout", stdoutR) }()
	go func() { defer copies.Done(); _ = p.log.CopyStream("stderr", stderrR) }()

	p.mu.Lock()
	pid, err := syscall.ForkExec(argv0, cfg.Args, &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: []uintptr{devnull.Fd(), stdoutW.Fd(), stderrW.Fd()},
		Sys:   &syscall.SysProcAttr{Credential: cred, Setpgid: true},
	})
	if err == nil {
		p.mainPid = pid
	}
	p.mu.Unlock()
	stdoutW.Close()
	stderrW.Close()
	devnull.Close()
	if err != nil {
		return 0, fmt.Errorf("exec %q: %w", cfg.Args[0], err)
	}
	reply(syncFile, spec.StartReply{Pid: pid})
	syncFile.Close()

	if ln >= 0 {
		// Exec sessions start from the configured environment, so that
		// HOME follows the exec's own user.
		go p.serveExec(ln, cfg.Env, cwd)
	}

	trimResident()
	status := p.loop(sigs)

	// The command is gone. Whatever it left running (daemons it spawned,
	// exec sessions) ends with it, as when PID 1 of a namespace exits; doing
	// it here lets the log pipes drain before the record is written.
	_ = unix.Kill(-1, unix.SIGKILL)
	p.reapAll()
	done := make(chan struct{})
	go func() { copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	_ = p.log.Close()

	exit := spec.Exit{FinishedAt: time.Now().UTC()}
	switch {
	case status.Exited():
		exit.Code = status.ExitStatus()
	case status.Signaled():
		exit.Signal = int(status.Signal())
		exit.Code = 128 + exit.Signal
	}
	if err := writeExit(p.inBundle(spec.ExitFile), exit); err != nil {
		fmt.Fprintln(os.Stderr, "shoal-init: record exit:", err)
	}
	return exit.Code, nil
}

func writeExit(path string, e spec.Exit) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// withDefaultEnv adds what Docker adds when the image and the user did not
// say: a PATH and HOME.
func withDefaultEnv(env []string, home string) []string {
	out := append([]string(nil), env...)
	has := func(k string) bool {
		for _, e := range env {
			if len(e) > len(k) && e[:len(k)+1] == k+"=" {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if !has("HOME") {
		out = append(out, "HOME="+home)
	}
	return out
}

// lookPath finds the command as execve would from inside the container,
// with the container's PATH.
func lookPath(args, env []string) (string, error) {
	if len(args) == 0 || args[0] == "" {
		return "", errors.New("no command: the image has no Entrypoint or Cmd and none was given")
	}
	name := args[0]
	if filepath.Base(name) != name || name[0] == '/' {
		if err := isExecutable(name); err != nil {
			return "", fmt.Errorf("exec %q: %w", name, err)
		}
		return name, nil
	}
	path := ""
	for _, e := range env {
		if len(e) > 5 && e[:5] == "PATH=" {
			path = e[5:]
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH", name)
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return errors.New("no such file or directory")
		}
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errors.New("permission denied")
	}
	return nil
}
