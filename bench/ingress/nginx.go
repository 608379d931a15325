package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// nginxProc is Debian's nginx running a stream{} proxy in the foreground.
type nginxProc struct {
	cmd *exec.Cmd
	dir string
}

// nginxModule returns the load_module line Debian's nginx needs for
// stream{} (a dynamic module in libnginx-mod-stream), "" when it is built
// in, or an error saying what to install.
func nginxModule(nginx string) (string, error) {
	out, err := exec.Command(nginx, "-V").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s -V: %v", nginx, err)
	}
	v := string(out)
	if !strings.Contains(v, "--with-stream=dynamic") {
		if strings.Contains(v, "--with-stream") {
			return "", nil
		}
		return "", fmt.Errorf("this nginx has no stream module")
	}
	dir := "/usr/lib/nginx/modules"
	for _, f := range strings.Fields(v) {
		if d, ok := strings.CutPrefix(f, "--modules-path="); ok {
			dir = d
		}
	}
	so := filepath.Join(dir, "ngx_stream_module.so")
	if _, err := os.Stat(so); err != nil {
		return "", fmt.Errorf("nginx's stream module %s is missing (Debian: apt-get install libnginx-mod-stream)", so)
	}
	return "load_module " + so + ";\n", nil
}

// startNginx writes a config in dir that proxies listen to backends with
// least_conn (the balancer's own policy) and runs nginx in the foreground
// as a child, in a process group of its own so that its workers are
// stopped with it.
func startNginx(nginx, module, dir, listen string, backends []string) (*nginxProc, error) {
	var ups strings.Builder
	for _, a := range backends {
		fmt.Fprintf(&ups, "        server %s;\n", a)
	}
	conf := fmt.Sprintf(`%sdaemon off;
worker_processes auto;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 4096; }
stream {
    upstream tasks {
        least_conn;
%s    }
    server {
        listen %s;
        proxy_pass tasks;
        proxy_connect_timeout 1s;
    }
}
`, module, dir, dir, ups.String(), listen)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", path, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	np := &nginxProc{cmd: cmd, dir: dir}
	// Ready when the port answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return np, nil
		}
		if time.Now().After(deadline) {
			np.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx did not listen on %s within 5s: %v\n%s", listen, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pids returns the master and its workers, for CPU accounting.
func (np *nginxProc) pids() []int {
	pids := []int{np.cmd.Process.Pid}
	return append(pids, childrenOf(np.cmd.Process.Pid)...)
}

// stop asks nginx to quit (SIGTERM: the master stops its workers and
// reaps them), and after 5 s kills its process group (the master and its
// workers, all started by this program); it reaps the master.
func (np *nginxProc) stop() {
	done := make(chan struct{})
	go func() {
		np.cmd.Wait()
		close(done)
	}()
	np.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	// Workers left by a master that did not quit in time.
	syscall.Kill(-np.cmd.Process.Pid, syscall.SIGKILL)
	<-done
}
