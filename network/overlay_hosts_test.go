package network

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/internal/testcluster"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// The multi-host test runs one Manager per host of a testcluster, each
// in a copy of the test binary started in the host's network namespace
// (TestHelperHost): a tiny agent that takes its orders over a unix
// socket in the host's run dir. The tasks' namespaces are pinned under
// that run dir, on the file system the test shares, so the test itself
// dials from a task's namespace.

// hostAgentEnv, when set, makes TestHelperHost the agent of one host;
// its value is the agent's hostAgentConfig in JSON.
const hostAgentEnv = "SHOAL_NETWORK_TEST_HOST_AGENT"

type hostAgentConfig struct {
	Socket   string
	RunDir   string
	Prefix   string
	Underlay string
}

// hostRequest is one order to a host agent.
type hostRequest struct {
	Op    string // attach, detach, peers, serve, cleanup, exit
	Task  string
	Net   hostNet
	Addr  string // attach: the task's address with its length; serve: the address to listen on
	Peers []hostPeer
}

type hostNet struct{ ID, Subnet string }

type hostPeer struct{ IP, Node string }

type hostReply struct {
	Err    string
	Listen string // serve: the listener's address
}

// TestHelperHost is not a test: it is the host agent of
// TestOverlayAcrossHosts, and skips itself when run as a test.
func TestHelperHost(t *testing.T) {
	spec := os.Getenv(hostAgentEnv)
	if spec == "" {
		t.Skip("the host agent of TestOverlayAcrossHosts")
	}
	os.Exit(hostAgent(spec))
}

func hostAgent(spec string) int {
	var cfg hostAgentConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	m, err := New(Config{RunDir: cfg.RunDir, Prefix: cfg.Prefix, Table: cfg.Prefix, UnderlayAddr: net.ParseIP(cfg.Underlay), Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	fmt.Println("host agent ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var req hostRequest
		var rep hostReply
		if err := json.NewDecoder(c).Decode(&req); err != nil {
			rep.Err = err.Error()
		} else {
			log.Info("order", "op", req.Op, "task", req.Task, "net", req.Net.ID)
			rep.Listen, err = hostDo(m, req)
			if err != nil {
				rep.Err = err.Error()
			}
		}
		json.NewEncoder(c).Encode(rep)
		c.Close()
		if req.Op == "exit" {
			return 0
		}
	}
}

func hostDo(m *Manager, req hostRequest) (string, error) {
	switch req.Op {
	case "attach":
		n := overlayNet(req.Net.ID, req.Net.Subnet, 0)
		_, _, err := m.Attach(req.Task, []*typesv1.NetworkAttachment{attach(n, req.Addr)})
		return "", err
	case "detach":
		return "", m.Detach(req.Task)
	case "peers":
		var peers []Peer
		for _, p := range req.Peers {
			peers = append(peers, Peer{IP: net.ParseIP(p.IP), Node: net.ParseIP(p.Node)})
		}
		return "", m.SetPeers(req.Net.ID, peers)
	case "serve":
		// A server in the task's namespace that answers each connection
		// with the address it comes from.
		var ln net.Listener
		err := inNetns(m.NsPath(req.Task), func() (err error) {
			ln, err = net.Listen("tcp", net.JoinHostPort(req.Addr, "0"))
			return err
		})
		if err != nil {
			return "", err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintln(c, c.RemoteAddr().(*net.TCPAddr).IP)
				c.Close()
			}
		}()
		return ln.Addr().String(), nil
	case "cleanup":
		return "", m.Cleanup()
	case "exit":
		return "", nil
	}
	return "", fmt.Errorf("unknown op %q", req.Op)
}

// hostAgentOf is the test's side of a host agent.
type hostAgentOf struct {
	t      *testing.T
	node   *testcluster.Node
	proc   *testcluster.Process
	cfg    hostAgentConfig
	socket string
}

func startHostAgent(t *testing.T, n *testcluster.Node, prefix string) *hostAgentOf {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := hostAgentConfig{
		Socket:   filepath.Join(n.RunDir, "agent.sock"),
		RunDir:   n.RunDir,
		Prefix:   prefix,
		Underlay: n.Addr.String(),
	}
	b, _ := json.Marshal(cfg)
	// The agent inherits the environment at Start.
	t.Setenv(hostAgentEnv, string(b))
	a := &hostAgentOf{t: t, node: n, cfg: cfg}
	a.proc = n.Start(exe, "-test.run=^TestHelperHost$")
	testcluster.Poll(t, "host agent on "+n.Name, 20*time.Second, func() bool {
		if a.proc.Exited() {
			t.Fatalf("host agent on %s exited: %v\n%s", n.Name, a.proc.Err(), a.proc.Output())
		}
		return strings.Contains(a.proc.Output(), "\nhost agent ready\n")
	})
	return a
}

func (a *hostAgentOf) call(req hostRequest) (hostReply, error) {
	c, err := net.DialTimeout("unix", a.cfg.Socket, 5*time.Second)
	if err != nil {
		return hostReply{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return hostReply{}, err
	}
	var rep hostReply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return hostReply{}, err
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("%s on %s: %s", req.Op, a.node.Name, rep.Err)
	}
	return rep, nil
}

func (a *hostAgentOf) do(req hostRequest) string {
	a.t.Helper()
	rep, err := a.call(req)
	if err != nil {
		a.t.Fatal(err)
	}
	return rep.Listen
}

// nsPath is where task's namespace is pinned on the agent's host.
func (a *hostAgentOf) nsPath(task string) string {
	return filepath.Join(a.cfg.RunDir, "netns", task)
}

// handle returns a netlink handle in the agent's host's namespace.
func (a *hostAgentOf) handle() *netlink.Handle {
	a.t.Helper()
	h, f, err := nsHandle(a.node.NetnsPath)
	if err != nil {
		a.t.Fatal(err)
	}
	f.Close()
	a.t.Cleanup(h.Close)
	return h
}

// TestOverlayAcrossHosts runs two hosts, each with its own Manager, and
// two overlay networks over VXLAN between them.
func TestOverlayAcrossHosts(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Nodes: 2})
	nodes := c.Nodes()
	n1, n2 := nodes[0], nodes[1]
	a1 := startHostAgent(t, n1, "sho1")
	a2 := startHostAgent(t, n2, "sho2")
	h1, h2 := a1.handle(), a2.handle()
	u1, u2 := n1.Addr.String(), n2.Addr.String()

	netA := hostNet{ID: identity.NewID(), Subnet: "172.31.1.0/24"}
	netB := hostNet{ID: identity.NewID(), Subnet: "172.31.2.0/24"}
	const (
		ipA = "172.31.1.11" // task a, network A, host 1
		ipB = "172.31.1.12" // task b, network A, host 2
		ipC = "172.31.2.13" // task c, network B, host 2
		ipD = "172.31.2.14" // task d, network B, host 1
	)
	// Host 2 learns its peers before it has network A's bridge: kept
	// for when the bridge comes.
	a2.do(hostRequest{Op: "peers", Net: netA, Peers: []hostPeer{{ipA, u1}, {ipB, u2}}})
	a1.do(hostRequest{Op: "attach", Task: "taska", Net: netA, Addr: ipA + "/24"})
	a2.do(hostRequest{Op: "attach", Task: "taskb", Net: netA, Addr: ipB + "/24"})
	a2.do(hostRequest{Op: "attach", Task: "taskc", Net: netB, Addr: ipC + "/24"})
	a1.do(hostRequest{Op: "attach", Task: "taskd", Net: netB, Addr: ipD + "/24"})
	a1.do(hostRequest{Op: "peers", Net: netA, Peers: []hostPeer{{ipA, u1}, {ipB, u2}}})
	a1.do(hostRequest{Op: "peers", Net: netB, Peers: []hostPeer{{ipC, u2}}})
	a2.do(hostRequest{Op: "peers", Net: netB, Peers: []hostPeer{{ipD, u1}}})
	addrB := a2.do(hostRequest{Op: "serve", Task: "taskb", Addr: ipB})
	addrC := a2.do(hostRequest{Op: "serve", Task: "taskc", Addr: ipC})

	// Across hosts by address, and the server sees the client's own
	// address: no NAT on the way.
	if seen, err := dial(a1.nsPath("taska"), addrB, 5*time.Second); err != nil || seen != ipA {
		t.Fatalf("task a (host 1) → task b (host 2) on network A: seen %q, %v; want %s", seen, err, ipA)
	}
	if seen, err := dial(a1.nsPath("taskd"), addrC, 5*time.Second); err != nil || seen != ipD {
		t.Errorf("task d (host 1) → task c (host 2) on network B: seen %q, %v; want %s", seen, err, ipD)
	}
	// Another overlay network's task is out of reach.
	if seen, err := dial(a1.nsPath("taska"), addrC, time.Second); err == nil {
		t.Errorf("task a on network A reached task c on network B (seen %s)", seen)
	}

	// Task a's neighbours: task b answered for by host 1's ARP proxy
	// with b's MAC, and the gateway by host 1's own bridge, not host 2's.
	br1 := bridgeName("sho1", netA.ID, 0)
	brLink, err := h1.LinkByName(br1)
	if err != nil {
		t.Fatal(err)
	}
	neighs := taskNeighbours(t, a1.nsPath("taska"))
	if got := neighs[ipB]; got != macFor(net.ParseIP(ipB)).String() {
		t.Errorf("task a's neighbour %s is at %q, want %s", ipB, got, macFor(net.ParseIP(ipB)))
	}
	if got := neighs["172.31.1.1"]; got != brLink.Attrs().HardwareAddr.String() {
		t.Errorf("task a's gateway is at %q, want host 1's bridge %s", got, brLink.Attrs().HardwareAddr)
	}

	// Host 1 forgets task b: its entries go, and so does the way there.
	vx1, err := h1.LinkByName(vxlanName("sho1", br1))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := peerEntries(t, h1, vx1.Attrs().Index), peerWant(ipB, u2); !slices.Equal(got, want) {
		t.Errorf("host 1's entries for network A:\n got %q\nwant %q", got, want)
	}
	vx2, err := h2.LinkByName(vxlanName("sho2", bridgeName("sho2", netA.ID, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := peerEntries(t, h2, vx2.Attrs().Index), peerWant(ipA, u1); !slices.Equal(got, want) {
		t.Errorf("host 2's entries for network A (set before its bridge):\n got %q\nwant %q", got, want)
	}
	a1.do(hostRequest{Op: "peers", Net: netA, Peers: []hostPeer{{ipA, u1}}})
	if got := peerEntries(t, h1, vx1.Attrs().Index); len(got) != 0 {
		t.Errorf("host 1's entries for network A after task b left its peers: %q", got)
	}
	if seen, err := dial(a1.nsPath("taska"), addrB, time.Second); err == nil {
		t.Errorf("task a reached task b after host 1 dropped it from its peers (seen %s)", seen)
	}

	// The last task of network A on host 1 goes: so do its bridge and
	// VXLAN device, and network B's stay.
	a1.do(hostRequest{Op: "detach", Task: "taska"})
	links, err := n1.Links()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(links, br1) || slices.Contains(links, vx1.Attrs().Name) {
		t.Errorf("host 1's links after network A's last task left: %v", links)
	}
	if !slices.Contains(links, vxlanName("sho1", bridgeName("sho1", netB.ID, 0))) {
		t.Errorf("host 1 lost network B's VXLAN device: %v", links)
	}

	a1.do(hostRequest{Op: "detach", Task: "taskd"})
	a2.do(hostRequest{Op: "detach", Task: "taskb"})
	a2.do(hostRequest{Op: "detach", Task: "taskc"})
	for _, a := range []*hostAgentOf{a1, a2} {
		a.do(hostRequest{Op: "cleanup"})
		a.do(hostRequest{Op: "exit"})
		select {
		case <-a.proc.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("host agent on %s did not exit", a.node.Name)
		}
		if err := a.proc.Err(); err != nil {
			t.Errorf("host agent on %s: %v", a.node.Name, err)
		}
	}
	c.Cleanup()
	if left := c.Leftovers(); len(left) > 0 {
		t.Errorf("left on the hosts:\n%s", strings.Join(left, "\n"))
	}
}

// taskNeighbours lists the IPv4 neighbour table of the namespace at
// path: MAC by address.
func taskNeighbours(t *testing.T, path string) map[string]string {
	t.Helper()
	h, f, err := nsHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer h.Close()
	ns, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range ns {
		if n.State&(unix.NUD_INCOMPLETE|unix.NUD_FAILED) == 0 {
			out[n.IP.String()] = n.HardwareAddr.String()
		}
	}
	return out
}
