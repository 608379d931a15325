package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// netStack is the stack TestNetworking deploys: web behind a published
// port and a VIP, a client on web's network, a stranger on another
// network, and a service with a mode host port.
const netStack = `services:
  web:
    image: shoal-e2e/web:latest
    deploy:
      replicas: 5
    ports:
      - "4300:80"
    networks: [front]
  client:
    image: shoal-e2e/web:latest
    command: ["/bin/helper", "sleep", "inf"]
    networks: [front]
  stranger:
    image: shoal-e2e/web:latest
    command: ["/bin/helper", "sleep", "inf"]
    networks: [back]
  pinned:
    image: shoal-e2e/web:latest
    ports:
      - target: 80
        published: 4301
        mode: host
    networks: [front]
networks:
  front:
  back:
`

// runningTasks counts the tasks of service that run and should.
func (n *node) runningTasks(service string) int {
	out, err := n.shoal("service", "ps", service)
	if err != nil {
		return -1
	}
	c := 0
	for _, r := range psRows(out) {
		if strings.HasPrefix(r["CURRENT STATE"], "Running") && r["DESIRED STATE"] == "Running" {
			c++
		}
	}
	return c
}

// containerOf names the running container of a task of service.
func (n *node) containerOf(service string) string {
	n.t.Helper()
	for _, c := range n.running() {
		if c.Spec.Labels["com.docker.swarm.service.name"] == service {
			return c.Name
		}
	}
	n.t.Fatalf("no running container of %s", service)
	return ""
}

// execIn runs the test helper in a container of service.
func (n *node) execIn(service string, args ...string) (string, error) {
	return n.shoal(append([]string{"container", "exec", n.containerOf(service), "/bin/helper"}, args...)...)
}

// hostnames returns the distinct hostname= values in fetch output.
func hostnames(out string) map[string]int {
	seen := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		if h, ok := strings.CutPrefix(strings.Fields(line + " x")[0], "hostname="); ok {
			seen[h]++
		}
	}
	return seen
}

// clientNetns makes a network namespace that stands for a machine outside
// the node: a veth pair to the host, the host side with address hostIP.
func clientNetns(t *testing.T) (ns, hostIP, clientIP string) {
	t.Helper()
	id := os.Getpid() % 200
	ns = fmt.Sprintf("shle2ec%d", os.Getpid())
	hostIP, clientIP = fmt.Sprintf("10.254.%d.1", id), fmt.Sprintf("10.254.%d.2", id)
	hostLink, nsLink := fmt.Sprintf("shle2eh%d", id), fmt.Sprintf("shle2en%d", id)
	steps := [][]string{
		{"netns", "add", ns},
		{"link", "add", hostLink, "type", "veth", "peer", "name", nsLink},
		{"link", "set", nsLink, "netns", ns},
		{"addr", "add", hostIP + "/30", "dev", hostLink},
		{"link", "set", hostLink, "up"},
		{"-n", ns, "addr", "add", clientIP + "/30", "dev", nsLink},
		{"-n", ns, "link", "set", nsLink, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "route", "add", "default", "via", hostIP},
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", hostLink).Run()
		exec.Command("ip", "netns", "del", ns).Run()
	})
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", s, err, out)
		}
	}
	return ns, hostIP, clientIP
}

// getFrom does one HTTP GET from inside network namespace ns.
func getFrom(ns, url string) (string, error) {
	out, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "5", url).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return string(out), nil
}

// TestNetworking: service discovery, VIP balancing, isolation, the
// ingress and mode host ports with the client's address kept, no request
// lost while tasks stop, and nothing left behind.
func TestNetworking(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed (make test installs it)")
	}
	n := newNode(t)
	n.must("swarm", "init", "--data-dir", n.dataDir, "--run-dir", n.runDir, "--listen-addr", n.addr, "--advertise-addr", n.addr)
	n.importHelperImage("shoal-e2e/web:latest")
	compose := filepath.Join(t.TempDir(), "net.yml")
	os.WriteFile(compose, []byte(netStack), 0o644)
	n.must("stack", "deploy", "-c", compose, "net")
	for svc, want := range map[string]int{"net_web": 5, "net_client": 1, "net_stranger": 1, "net_pinned": 1} {
		poll(t, svc+" running", 60*time.Second, func() bool { return n.runningTasks(svc) == want })
	}

	// DNS: the service name is the VIP, tasks.<name> the task addresses.
	vip, err := n.execIn("net_client", "lookup", "web")
	if err != nil {
		t.Fatalf("lookup web from a task: %v", err)
	}
	vip = strings.TrimSpace(vip)
	if net.ParseIP(vip) == nil {
		t.Fatalf("web resolves to %q, want one address (the VIP)", vip)
	}
	full, _ := n.execIn("net_client", "lookup", "net_web")
	if strings.TrimSpace(full) != vip {
		t.Errorf("net_web resolves to %q, web to %q", full, vip)
	}
	tasks, err := n.execIn("net_client", "lookup", "tasks.web")
	if err != nil || len(strings.Fields(tasks)) != 5 || strings.Contains(tasks, vip+"\n") {
		t.Errorf("tasks.web resolves to %q (%v), want the 5 task addresses", tasks, err)
	}
	// The VIP spreads connections over the tasks.
	out, err := n.execIn("net_client", "fetch", "http://web/", "20")
	if err != nil {
		t.Fatalf("20 requests to http://web/ from a task: %v\n%s", err, out)
	}
	if seen := hostnames(out); len(seen) < 3 {
		t.Errorf("the VIP sent 20 requests to %d tasks (%v), want at least 3", len(seen), seen)
	}
	// Another network's task neither resolves nor reaches web.
	if out, err := n.execIn("net_stranger", "lookup", "web"); err == nil {
		t.Errorf("a task on another network resolved web: %s", out)
	}
	if out, err := n.execIn("net_stranger", "fetch", "http://"+vip+"/", "1"); err == nil {
		t.Errorf("a task on another network reached the VIP: %s", out)
	}

	// The ingress from another machine: spread, and the client's address
	// reaches the task.
	ns, hostIP, clientIP := clientNetns(t)
	seen := map[string]int{}
	for range 10 {
		body, err := getFrom(ns, "http://"+hostIP+":4300/")
		if err != nil {
			t.Fatalf("ingress from outside: %v", err)
		}
		for h, c := range hostnames(body) {
			seen[h] += c
		}
		if !strings.Contains(body, "remote="+clientIP+":") {
			t.Errorf("the task saw %q, want the client's address %s", strings.TrimSpace(body), clientIP)
		}
	}
	if len(seen) < 3 {
		t.Errorf("10 requests through the ingress reached %d tasks (%v), want at least 3", len(seen), seen)
	}
	// Loopback goes through the userspace proxy.
	if body, err := httpGet("http://127.0.0.1:4300/"); err != nil || !strings.Contains(body, "hostname=") {
		t.Errorf("ingress on loopback: %q, %v", body, err)
	}
	// Mode host: the node's port reaches its one task, with the client's
	// address.
	body, err := getFrom(ns, "http://"+hostIP+":4301/")
	if err != nil || !strings.Contains(body, "remote="+clientIP+":") {
		t.Errorf("mode host port from outside: %q, %v", body, err)
	}

	// Scaling down under load: no request fails, as the stopping tasks
	// leave the rotation before they get SIGTERM.
	var fails, oks atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, url := range []string{"http://" + hostIP + ":4300/", "http://127.0.0.1:4300/"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if strings.Contains(url, "127.0.0.1") {
					_, err = httpGet(url)
				} else {
					_, err = getFrom(ns, url)
				}
				if err != nil {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					oks.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	n.must("service", "scale", "net_web=2")
	poll(t, "2 tasks after scale", 30*time.Second, func() bool {
		c := 0
		for _, r := range n.running() {
			if r.Spec.Labels["com.docker.swarm.service.name"] == "net_web" {
				c++
			}
		}
		return c == 2
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if fails.Load() != 0 {
		t.Errorf("%d of %d requests failed while web scaled from 5 to 2; first: %v", fails.Load(), fails.Load()+oks.Load(), firstErr.Load())
	}
	t.Logf("scale down under load: %d requests, %d failed", oks.Load()+fails.Load(), fails.Load())

	// stack rm leaves no bridge, veth or rule.
	n.must("stack", "rm", "net")
	poll(t, "no containers", 30*time.Second, func() bool { return len(n.containers()) == 0 })
	poll(t, "no shoal links", 30*time.Second, func() bool {
		out, _ := exec.Command("ip", "-o", "link", "show").Output()
		return !strings.Contains(string(out), " shl-")
	})
	poll(t, "no kernel balancer rules", 10*time.Second, func() bool {
		out, _ := exec.Command("nft", "list", "table", "ip", "shoal-lb").CombinedOutput()
		return !strings.Contains(string(out), "dnat")
	})
	if _, err := net.Dial("tcp", "127.0.0.1:4300"); err == nil {
		t.Error("port 4300 still answers after stack rm")
	}
}

// TestPublishedDeployCycles deploys and removes a published 50-replica
// stack on a /24 ten times in a row: addresses and ports are freed each
// time (Docker leaks them, moby/moby#37338), so the last deploy still
// converges.
func TestPublishedDeployCycles(t *testing.T) {
	n := newNode(t)
	n.must("swarm", "init", "--data-dir", n.dataDir, "--run-dir", n.runDir, "--listen-addr", n.addr, "--advertise-addr", n.addr)
	n.importHelperImage("shoal-e2e/web:latest")
	compose := filepath.Join(t.TempDir(), "cycle.yml")
	os.WriteFile(compose, []byte(`services:
  web:
    image: shoal-e2e/web:latest
    deploy:
      replicas: 50
    ports:
      - "4400:80"
    networks: [net]
networks:
  net:
    ipam:
      config:
        - subnet: 10.77.0.0/24
`), 0o644)
	for i := 1; i <= 10; i++ {
		start := time.Now()
		n.must("stack", "deploy", "-c", compose, "cycle")
		poll(t, fmt.Sprintf("deploy %d: 50 running", i), 90*time.Second, func() bool { return len(n.running()) == 50 })
		// Running is not yet listening: give the tasks' servers a moment.
		var body string
		var err error
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if body, err = httpGet("http://127.0.0.1:4400/"); err == nil && strings.Contains(body, "hostname=") {
				break
			}
		}
		if err != nil || !strings.Contains(body, "hostname=") {
			t.Errorf("deploy %d: port 4400: %q, %v", i, body, err)
		}
		up := time.Since(start)
		n.must("stack", "rm", "cycle")
		poll(t, fmt.Sprintf("rm %d: no containers", i), 90*time.Second, func() bool { return len(n.containers()) == 0 })
		t.Logf("cycle %d: 50 running after %v, all gone after %v", i, up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
}
