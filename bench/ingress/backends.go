package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
)

// The program re-executed with roleEnv=task is one task: a Go net/http
// server on :taskPort inside the network namespace it was started in,
// named by taskEnv. Each task is a process of its own in a namespace of
// its own, as shoal runs them, so that the tasks share neither a Go
// scheduler nor a network stack with each other or with the proxies.
const (
	roleEnv  = "SHOAL_BENCH_INGRESS_ROLE"
	taskEnv  = "SHOAL_BENCH_INGRESS_TASK"
	taskPort = 80
)

// backendBody is what every request gets: a small response, so that the
// benchmark weighs the path of a request, not the copying of a body.
var backendBody = []byte("hello from a shoal task\n")

// taskHandler answers backendBody, and on /who the task's name and the
// address the connection came from: the benchmark checks with it which
// path a connection took (DNAT keeps the client's address, a proxy's
// dial comes from the bridge's).
func taskHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		if r.URL.Path == "/who" {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintf(w, "%s %s\n", name, host)
			return
		}
		w.Write(backendBody)
	})
}

// serveTask is the task process. It prints "ready" once it listens and
// exits when its stdin closes, that is when the benchmark ends or dies.
func serveTask() {
	l, err := net.Listen("tcp4", fmt.Sprintf(":%d", taskPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "task:", err)
		os.Exit(1)
	}
	go http.Serve(l, taskHandler(os.Getenv(taskEnv)))
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// taskProc is one running task process.
type taskProc struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
}

// startTasks starts a task process in each task's namespace, through
// nsenter(1): it joins the namespace and execs the program, so the task's
// pid is the program's. (Forking from a Go thread that joined the
// namespace would do without nsenter, but that thread must then be
// thrown away, and Pdeathsig, which ties the task's life to this
// program, fires when the thread that forked the child ends.)
func startTasks(nsenter string, tasks []hostTask) ([]*taskProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// A GOMAXPROCS given to the benchmark is meant for the balancer; the
	// tasks keep Go's default.
	env := slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, "GOMAXPROCS=") })
	var procs []*taskProc
	for _, t := range tasks {
		cmd := exec.Command(nsenter, "--net="+t.ns, "--", self)
		cmd.Env = append(slices.Clone(env), roleEnv+"=task", taskEnv+"="+t.name)
		cmd.Stderr = os.Stderr
		// Dies with the benchmark, even on kill -9.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			stopTasks(procs)
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			stopTasks(procs)
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			stopTasks(procs)
			return nil, fmt.Errorf("start %s: %w", t.name, err)
		}
		tp := &taskProc{cmd: cmd, stdin: stdin}
		procs = append(procs, tp)
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if strings.TrimSpace(line) != "ready" {
			stopTasks(procs)
			return nil, fmt.Errorf("%s ended before it listened", t.name)
		}
	}
	return procs, nil
}

// stopTasks kills the task processes and reaps them.
func stopTasks(procs []*taskProc) {
	for _, p := range procs {
		p.stdin.Close()
		p.cmd.Process.Kill()
	}
	for _, p := range procs {
		p.cmd.Wait()
	}
}
