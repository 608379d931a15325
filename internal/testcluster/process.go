package testcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Command returns a command that runs name with args in the node's
// network namespace, through nsenter --net (see the package doc): the
// process that runs is name's own, nsenter execs it. Its stdout and
// stderr go to the node's commands.log, which a failed test shows; set
// them to something else before starting it to capture them. The
// harness does not track it: to run a daemon, use Start.
func (n *Node) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(n.c.nsenter, append([]string{"--net=" + n.NetnsPath, "--", name}, args...)...)
	cmd.Stdout, cmd.Stderr = n.log, n.log
	n.logf("$ %s", commandLine(name, args))
	return cmd
}

// logf adds a line to the node's commands.log.
func (n *Node) logf(format string, args ...any) {
	fmt.Fprintf(n.log, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// commandLine writes a command as a shell would read it, near enough for
// a log.
func commandLine(name string, args []string) string {
	parts := []string{name}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// Run runs name with args in the node's namespace to completion and
// returns its stdout. If it fails, the error holds its stdout and
// stderr, and wraps the *exec.ExitError. Both outputs also go to the
// node's commands.log. They are files, not pipes, so a daemon that the
// command leaves behind does not hold Run up, nor die of a closed pipe.
func (n *Node) Run(name string, args ...string) (string, error) {
	cmd := n.Command(name, args...)
	outF, err := os.CreateTemp(n.LogDir, ".run-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(outF.Name())
	defer outF.Close()
	errF, err := os.CreateTemp(n.LogDir, ".run-*.err")
	if err != nil {
		return "", err
	}
	defer os.Remove(errF.Name())
	defer errF.Close()
	cmd.Stdout, cmd.Stderr = outF, errF
	runErr := cmd.Run()
	stdout, _ := os.ReadFile(outF.Name())
	stderr, _ := os.ReadFile(errF.Name())
	n.log.Write(stdout)
	n.log.Write(stderr)
	if runErr != nil {
		n.logf("%s: %v", name, runErr)
		return string(stdout), fmt.Errorf("%s on %s: %w\nstdout:\n%s\nstderr:\n%s", commandLine(name, args), n.Name, runErr, stdout, stderr)
	}
	return string(stdout), nil
}

// Process is a program that Start started on a node.
type Process struct {
	node    *Node
	name    string
	args    []string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited and been waited for
	err     error         // what Wait returned; set before done is closed
}

// Start starts name with args in the node's namespace and tracks it:
// its stdout and stderr go to a log file of its own in the node's
// LogDir (see LogFile), and Cleanup stops it if it still runs. It fails
// the test if the program cannot be started; call it from the test's
// goroutine.
func (n *Node) Start(name string, args ...string) *Process {
	t := n.c.t
	t.Helper()
	n.c.mu.Lock()
	closing := n.c.closing
	n.c.mu.Unlock()
	if closing {
		t.Fatalf("testcluster: %s: Start after Cleanup", n.Name)
	}
	p := &Process{node: n, name: name, args: args, done: make(chan struct{})}
	p.logPath = filepath.Join(n.LogDir, fmt.Sprintf("%03d-%s.log", n.c.seq.Add(1), filepath.Base(name)))
	f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("testcluster: %v", err)
	}
	defer f.Close() // the process has its own descriptor
	fmt.Fprintf(f, "%s $ %s\n", time.Now().Format("15:04:05.000"), commandLine(name, args))
	p.cmd = n.Command(name, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("testcluster: start %s on %s: %v", commandLine(name, args), n.Name, err)
	}
	n.logf("started pid %d, output in %s", p.cmd.Process.Pid, filepath.Base(p.logPath))
	go p.wait()
	n.c.mu.Lock()
	n.c.procs = append(n.c.procs, p)
	n.c.mu.Unlock()
	return p
}

func (p *Process) wait() {
	p.err = p.cmd.Wait()
	status := "exited 0"
	if p.err != nil {
		status = p.err.Error()
	}
	if f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		fmt.Fprintf(f, "%s [testcluster: pid %d %s]\n", time.Now().Format("15:04:05.000"), p.Pid(), status)
		f.Close()
	}
	close(p.done)
}

func (p *Process) String() string {
	return fmt.Sprintf("%s (pid %d)", commandLine(p.name, p.args), p.Pid())
}

// Pid returns the process's pid.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err returns how the process ended, as exec.Cmd.Wait does (an
// *exec.ExitError unless it exited 0), or nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// LogFile returns the path of the file that holds the process's output.
func (p *Process) LogFile() string { return p.logPath }

// Output returns the process's output so far.
func (p *Process) Output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// signal sends sig unless the process has been waited for; the pidfd
// that os.Process holds keeps a reused pid safe.
func (p *Process) signal(sig syscall.Signal) {
	if p.Exited() {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.node.c.t.Errorf("testcluster: signal %s: %v", p, err)
	}
}

// Kill sends SIGKILL to the process, and to it alone, as `kill -9` of a
// node's daemon does: what it started (containers) keeps running. It
// returns when the process has exited.
func (p *Process) Kill() {
	p.signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		p.node.c.t.Errorf("testcluster: %s still running %v after SIGKILL", p, killTimeout)
	}
}

// Stop sends SIGTERM to the process and, if it has not exited within
// timeout, SIGKILL. It returns when the process has exited.
func (p *Process) Stop(timeout time.Duration) {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Kill()
	}
}
