package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type result struct {
	stdout, stderr string
	code           int
}

// helperRun runs the helper to completion with env (nil: inherit).
func helperRun(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(GoBuild(t, HelperPkg), args...)
	cmd.Env = env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), exitCode(t, err)}
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.Exited():
		return ee.ExitCode()
	default:
		t.Fatal(err)
		return -1
	}
}

func TestHelperCommands(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("hello"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(file, 0o640); err != nil { // past the umask
		t.Fatal(err)
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(groups)
	var gs []string
	for _, g := range groups {
		gs = append(gs, strconv.Itoa(g))
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	written := filepath.Join(dir, "new", "sub", "w.txt")

	tests := []struct {
		name       string
		env        []string
		args       []string
		code       int
		stdout     string // exact, unless prefix is set
		prefix     bool
		stderrHas  string
		checkAfter func(t *testing.T)
	}{
		{name: "echo", args: []string{"echo", "a", "b  c"}, stdout: "a b  c\n"},
		{name: "echo nothing", args: []string{"echo"}, stdout: "\n"},
		{name: "env sorted", env: []string{"ZED=1", "ALPHA=2", "MID=x=y"}, args: []string{"env"}, stdout: "ALPHA=2\nMID=x=y\nZED=1\n"},
		{name: "id", args: []string{"id"}, stdout: fmt.Sprintf("uid=%d gid=%d groups=%s\n", os.Getuid(), os.Getgid(), strings.Join(gs, ","))},
		{name: "hostname", args: []string{"hostname"}, stdout: host + "\n"},
		{name: "exit code", args: []string{"exit", "42"}, code: 42},
		{name: "true", args: []string{"true"}},
		{name: "false", args: []string{"false"}, code: 1},
		{name: "cat", args: []string{"cat", file}, stdout: "hello"},
		{name: "cat missing", args: []string{"cat", filepath.Join(dir, "nope")}, code: 1, stderrHas: "no such file"},
		{name: "stat", args: []string{"stat", file}, stdout: fmt.Sprintf("0640 %d %d 5\n", os.Getuid(), os.Getgid())},
		{name: "write", args: []string{"write", written, "content"}, checkAfter: func(t *testing.T) {
			if b, err := os.ReadFile(written); err != nil || string(b) != "content" {
				t.Errorf("written file: %q, %v", b, err)
			}
		}},
		{name: "ls", args: []string{"ls", dir}, stdout: "f\nnew\n"},
		{name: "sleep", args: []string{"sleep", "0.01"}},
		{name: "log", args: []string{"log", "3", "8"}, stdout: "0 xxxxxx\n1 xxxxxx\n2 xxxxxx\n"},
		{name: "log short lines", args: []string{"log", "2", "1"}, stdout: "0\n1\n"},
		{name: "stderr", args: []string{"stderr", "to", "stderr"}, stderrHas: "to stderr\n"},
		{name: "tryopen ok", args: []string{"tryopen", file}, stdout: "ok\n"},
		{name: "tryopen denied", args: []string{"tryopen", filepath.Join(dir, "nope")}, code: 1, stdout: "open " + filepath.Join(dir, "nope") + ": no such file or directory\n"},
		{name: "sh -c", args: []string{"sh", "-c", "echo hi  there"}, stdout: "hi there\n"},
		{name: "sh -c exit", args: []string{"sh", "-c", "exit 3"}, code: 3},
		{name: "fork", args: []string{"fork", "3", "0.05"}, stdout: "started 3\n"},
		{name: "mounts", args: []string{"mounts"}, stdout: mustRead(t, "/proc/self/mountinfo")[:20], prefix: true},
		{name: "unknown", args: []string{"frobnicate"}, code: 2, stderrHas: "usage: helper"},
		{name: "no command", args: nil, code: 2, stderrHas: "usage: helper"},
		{name: "bad args", args: []string{"exit", "x"}, code: 2, stderrHas: "usage: helper"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := helperRun(t, tt.env, tt.args...)
			if got.code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", got.code, tt.code, got.stderr)
			}
			if tt.prefix && !strings.HasPrefix(got.stdout, tt.stdout) || !tt.prefix && got.stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", got.stdout, tt.stdout)
			}
			if !strings.Contains(got.stderr, tt.stderrHas) {
				t.Errorf("stderr %q, want it to hold %q", got.stderr, tt.stderrHas)
			}
			if tt.checkAfter != nil {
				tt.checkAfter(t)
			}
		})
	}
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHelperPwd(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(GoBuild(t, HelperPkg), "pwd")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil || string(out) != dir+"\n" {
		t.Errorf("pwd in %s: %q, %v", dir, out, err)
	}
}

func TestHelperCaps(t *testing.T) {
	out := helperRun(t, nil, "caps").stdout
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(v) == "" {
			t.Errorf("line %q is not KEY:\tVALUE", line)
		}
		keys = append(keys, k)
	}
	if want := "CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs"; strings.Join(keys, " ") != want {
		t.Errorf("keys %v, want %s", keys, want)
	}
}

func TestHelperPs(t *testing.T) {
	out := helperRun(t, nil, "ps").stdout
	// The test process, parent of the helper, is listed with its state
	// and arguments, and so is the helper. (Its state may be S: /proc
	// shows the main thread's, not that of the thread running ps.)
	self := fmt.Sprintf("%d %d ", os.Getpid(), os.Getppid())
	var found, helper bool
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, self) {
			f := strings.Fields(line)
			found = len(f) >= 5 && len(f[2]) == 1 && strings.HasSuffix(f[4], filepath.Base(os.Args[0]))
		}
		if f := strings.Fields(line); len(f) >= 5 && f[1] == strconv.Itoa(os.Getpid()) && f[3] == "testhelper" && f[len(f)-1] == "ps" {
			helper = true
		}
	}
	if !found || !helper {
		t.Errorf("ps lacks the test process (%q…) or itself:\n%s", self, out)
	}
}

// proc is a helper process running in the background, killed at cleanup.
type proc struct {
	cmd   *exec.Cmd
	lines chan string // stdout, line by line; closed at EOF
}

func startHelper(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(GoBuild(t, HelperPkg), args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

// line waits, with a deadline, for the next line of output.
func (p *proc) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("%v: output ended", p.cmd.Args)
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatalf("%v: no output within 10s", p.cmd.Args)
		return ""
	}
}

// wait waits, with a deadline, for the process to exit.
func (p *proc) wait(t *testing.T) *os.ProcessState {
	t.Helper()
	done := make(chan struct{})
	go func() {
		for range p.lines { // the reader must finish before Wait
		}
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
		return p.cmd.ProcessState
	case <-time.After(10 * time.Second):
		t.Fatalf("%v did not exit within 10s", p.cmd.Args)
		return nil
	}
}

func TestHelperTrap(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			p := startHelper(t, "trap")
			if l := p.line(t); l != "ready" {
				t.Fatalf("first line %q, want ready", l)
			}
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if l, want := p.line(t), "got "+unix.SignalName(sig); l != want {
				t.Errorf("line %q, want %q", l, want)
			}
			if st := p.wait(t); st.ExitCode() != 0 {
				t.Errorf("exit %v, want 0", st)
			}
		})
	}
}

func TestHelperTrapIgnore(t *testing.T) {
	p := startHelper(t, "trap", "ignore")
	if l := p.line(t); l != "ready" {
		t.Fatalf("first line %q, want ready", l)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGINT} {
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		// A second answer proves it survived the first signal.
		if l, want := p.line(t), "got "+unix.SignalName(sig); l != want {
			t.Errorf("line %q, want %q", l, want)
		}
	}
	p.cmd.Process.Kill()
	st := p.wait(t)
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Errorf("ended with %v, want killed by SIGKILL", st)
	}
}

func TestHelperZombie(t *testing.T) {
	// As a subreaper, this process stands in for a container's PID 1: the
	// orphan is reparented to it, and reaping it is up to us.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	p := startHelper(t, "zombie")
	var pid int
	if l := p.line(t); !strings.HasPrefix(l, "orphan ") {
		t.Fatalf("line %q, want orphan PID", l)
	} else if pid, _ = strconv.Atoi(strings.TrimPrefix(l, "orphan ")); pid <= 0 {
		t.Fatalf("line %q: bad pid", l)
	}
	stat := mustRead(t, fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if ppid, _ := strconv.Atoi(f[1]); ppid != os.Getpid() {
		t.Errorf("orphan %d has parent %d, want this process %d", pid, ppid, os.Getpid())
	}
	// It exits by itself and stays a zombie until its new parent reaps it.
	var ws unix.WaitStatus
	done := make(chan error, 1)
	go func() {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || !ws.Exited() || ws.ExitStatus() != 0 {
			t.Errorf("reaping orphan %d: %v, status %v", pid, err, ws)
		}
	case <-time.After(10 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("orphan %d did not exit", pid)
	}
}

func TestHelperServe(t *testing.T) {
	p := startHelper(t, "serve", "0")
	l := p.line(t)
	addr, ok := strings.CutPrefix(l, "listening ")
	if !ok {
		t.Fatalf("line %q, want listening ADDR", l)
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	get := func(path string) string {
		t.Helper()
		resp, err := http.Get("http://127.0.0.1:" + port + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s %q %v", path, resp.Status, b, err)
		}
		return string(b)
	}
	host, _ := os.Hostname()
	body := get("/")
	if !strings.HasPrefix(body, "hostname="+host+" remote=127.0.0.1:") || !strings.HasSuffix(body, "\n") {
		t.Errorf("GET / = %q, want hostname=%s remote=127.0.0.1:PORT", body, host)
	}
	if body := get("/exit"); body != "bye\n" {
		t.Errorf("GET /exit = %q", body)
	}
	if st := p.wait(t); st.ExitCode() != 0 {
		t.Errorf("serve ended with %v after /exit, want exit 0", st)
	}
}

func TestHelperAlloc(t *testing.T) {
	p := startHelper(t, "alloc", "32")
	if l := p.line(t); l != "allocated" {
		t.Fatalf("line %q, want allocated", l)
	}
	status := mustRead(t, fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	var rssKB int
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			rssKB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	if rssKB < 32<<10 {
		t.Errorf("resident %d kB after alloc 32, want the pages touched (≥ %d kB)", rssKB, 32<<10)
	}
}

func TestHelperSpin(t *testing.T) {
	p := startHelper(t, "spin")
	// utime+stime in clock ticks (100 Hz): wait for a tenth of a second
	// of CPU, which an idle process would never use.
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat := mustRead(t, fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
		utime, _ := strconv.Atoi(f[11])
		stime, _ := strconv.Atoi(f[12])
		if utime+stime >= 10 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spin used %d ticks of CPU in 10s", utime+stime)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
