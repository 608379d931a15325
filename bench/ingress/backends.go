package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// roleEnv makes the program a backend process instead of the benchmark:
// the tasks run in a process of their own, as tasks do, so that the
// balancer and the tasks do not share one Go scheduler and its CPUs.
const roleEnv = "SHOAL_BENCH_INGRESS_ROLE"

// backendBody is what every request gets: a small response, so that the
// benchmark weighs the path of a request, not the copying of a body.
var backendBody = []byte("hello from a shoal task\n")

// serveBackends is the backend process: n HTTP servers on 127.0.0.11,
// 127.0.0.12, … (each task has an address of its own, as on an overlay),
// their addresses printed one per line, then "ready". It exits when its
// stdin closes, that is when the benchmark ends or dies.
func serveBackends(n int) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd["Content-Type"] = []string{"text/plain"}
		w.Write(backendBody)
	})
	for i := range n {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", 11+i))
		if err != nil {
			fmt.Fprintln(os.Stderr, "backends:", err)
			os.Exit(1)
		}
		fmt.Println(l.Addr())
		go http.Serve(l, h)
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

// backendProc is the running backend process.
type backendProc struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	addrs []string
}

func startBackends(n int) (*backendProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-backends", strconv.Itoa(n))
	// GOMAXPROCS given to the benchmark is meant for the balancer; the
	// tasks keep Go's default, whatever the balancer is tried with.
	env := slices.DeleteFunc(os.Environ(), func(s string) bool { return strings.HasPrefix(s, "GOMAXPROCS=") })
	cmd.Env = append(env, roleEnv+"=backends")
	cmd.Stderr = os.Stderr
	// Dies with the benchmark, even on kill -9.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	bp := &backendProc{cmd: cmd, stdin: stdin}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "ready" {
			return bp, nil
		}
		bp.addrs = append(bp.addrs, line)
	}
	bp.stop()
	return nil, fmt.Errorf("backend process ended before it was ready")
}

func (bp *backendProc) pid() int { return bp.cmd.Process.Pid }

func (bp *backendProc) stop() {
	bp.stdin.Close()
	bp.cmd.Process.Kill()
	bp.cmd.Wait()
}
