package dnat

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/testutil"
)

// lab is a host for one test, inside the test machine's own network
// namespace: a bridge with tasks, each in its own namespace and running a
// TCP and a UDP server that answer with their name, and a client namespace
// routed through the host as a machine outside would be. Every name
// (links, namespaces, table) starts with the lab's id, so that tests run
// beside each other and beside a real node, and the cleanup can prove
// that nothing is left.
//
//	client ns  eth0 10.251.X.2/30 ── <id>-c 10.251.X.1/30   (host)
//	task ns i  eth0 10.250.X.(11+i)/24 ── <id>-t<i> ── bridge <id>-br0 10.250.X.1/24, VIP 10.250.X.100/32
//	node ns k  eth0 10.251.X.(4k+6)/30 ── <id>-<name> 10.251.X.(4k+5)/30   (addNode)
type lab struct {
	t            *testing.T
	id           string
	table        string
	bridgePrefix string
	bridge       string
	gw           netip.Addr   // the bridge's address, the tasks' gateway
	subnet       netip.Prefix // the tasks' network
	vip          netip.Addr   // an extra /32 of the bridge, as package network adds VIPs
	hostOut      netip.Addr   // the host's end of the client's link
	client       netip.Addr
	clientNs     string
	tasks        []labTask
	nodes        []labTask // other nodes of the cluster (addNode)
	// pub and pubUDP are published ports, target the port the tasks
	// listen on (TCP and UDP); none has a listener on the host.
	pub, pubUDP, target uint16
	m                   *Manager
}

type labTask struct {
	name string
	ns   string // netns name, under /run/netns
	addr netip.Addr
}

func newLab(t *testing.T, tasks int) *lab {
	t.Helper()
	testutil.RequiresRoot(t)
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(string(b)) != "1" {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			t.Fatalf("enable forwarding: %v", err)
		}
	}
	b := make([]byte, 2)
	rand.Read(b)
	id := "shd" + hex.EncodeToString(b)
	x := freeOctet(t)
	l := &lab{
		t: t, id: id, table: id, bridgePrefix: id + "-br", bridge: id + "-br0",
		gw:       netip.AddrFrom4([4]byte{10, 250, x, 1}),
		subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, x, 0}), 24),
		vip:      netip.AddrFrom4([4]byte{10, 250, x, 100}),
		hostOut:  netip.AddrFrom4([4]byte{10, 251, x, 1}),
		client:   netip.AddrFrom4([4]byte{10, 251, x, 2}),
		clientNs: id + "-c",
	}
	// Registered first, so it runs last: after the servers' cleanups
	// have closed their sockets.
	t.Cleanup(l.cleanup)

	l.pub = freePort(t, "tcp")
	l.pubUDP = freePort(t, "udp")
	for l.target = freePort(t, "tcp"); l.target == l.pub || l.target == l.pubUDP; {
		l.target = freePort(t, "tcp")
	}

	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.bridge, TxQLen: -1}}); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	br, err := netlink.LinkByName(l.bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Prefix{netip.PrefixFrom(l.gw, 24), netip.PrefixFrom(l.vip, 32)} {
		if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(a)}); err != nil {
			t.Fatalf("bridge address %s: %v", a, err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for i := range tasks {
		task := labTask{name: fmt.Sprintf("t%d", i), ns: fmt.Sprintf("%s-t%d", id, i), addr: netip.AddrFrom4([4]byte{10, 250, x, byte(11 + i)})}
		l.addNs(task.ns, fmt.Sprintf("%s-t%d", id, i), netip.PrefixFrom(task.addr, 24), l.gw, br)
		l.tasks = append(l.tasks, task)
		l.serve(task)
	}
	l.addNs(l.clientNs, id+"-c", netip.PrefixFrom(l.client, 30), l.hostOut, nil)
	host, err := netlink.LinkByName(id + "-c")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(l.hostOut, 30))}); err != nil {
		t.Fatal(err)
	}

	l.m, err = New(Config{Table: l.table, BridgePrefix: l.bridgePrefix,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// freeOctet picks X for 10.250.X.0/24 and 10.251.X.0/30 so that no
// address of the host is in either.
func freeOctet(t *testing.T) byte {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		b := make([]byte, 1)
		rand.Read(b)
		used := false
		for _, a := range addrs {
			ip := a.IP.To4()
			used = used || ip != nil && ip[0] == 10 && (ip[1] == 250 || ip[1] == 251) && ip[2] == b[0]
		}
		if !used {
			return b[0]
		}
	}
	t.Fatal("no free 10.250.X.0/24")
	return 0
}

// addNs makes a namespace with a veth to the host named hostLink
// (enslaved to br if not nil), addr on its eth0 and a default route via
// gw.
func (l *lab) addNs(name, hostLink string, addr netip.Prefix, gw netip.Addr, br netlink.Link) {
	t := l.t
	t.Helper()
	if err := newNamedNetns(name); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(nsPath(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostLink, TxQLen: -1},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(f.Fd())}); err != nil {
		t.Fatalf("veth %s: %v", hostLink, err)
	}
	host, err := netlink.LinkByName(hostLink)
	if err != nil {
		t.Fatal(err)
	}
	if br != nil {
		if err := netlink.LinkSetMaster(host, br); err != nil {
			t.Fatal(err)
		}
		// As package network does: a task calling a VIP may be sent
		// back to itself, out of the port it came in by.
		if err := netlink.LinkSetHairpin(host, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	in, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(in, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(in); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: in.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		t.Fatalf("default route of %s: %v", name, err)
	}
}

// cleanup removes everything of the lab, also after a failure half-way,
// and then fails the test if anything is left.
func (l *lab) cleanup() {
	t := l.t
	if l.m != nil {
		if err := l.m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		// Entries of the lab's flows would outlive it by minutes.
		for _, task := range slices.Concat(l.tasks, l.nodes) {
			if err := l.m.Forget(task.addr); err != nil {
				t.Errorf("Forget %s: %v", task.addr, err)
			}
			// And those Forget leaves, that were not DNATed.
			f := &netlink.ConntrackFilter{}
			if err := f.AddIP(netlink.ConntrackReplySrcIP, task.addr.AsSlice()); err != nil {
				t.Error(err)
			} else if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
				t.Errorf("delete conntrack entries of %s: %v", task.addr, err)
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Error(err)
	}
	for _, link := range links {
		if strings.HasPrefix(link.Attrs().Name, l.id) {
			if err := netlink.LinkDel(link); err != nil {
				t.Errorf("delete link %s: %v", link.Attrs().Name, err)
			}
		}
	}
	names, _ := filepath.Glob(nsPath(l.id + "-*"))
	for _, p := range names {
		if err := deleteNamedNetns(p); err != nil {
			t.Errorf("delete netns %s: %v", p, err)
		}
	}
	l.assertClean()
}

// assertClean fails the test if a link, a namespace or the table of the
// lab is still there.
func (l *lab) assertClean() {
	t := l.t
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, link := range links {
		if strings.HasPrefix(link.Attrs().Name, l.id) {
			t.Errorf("link %s left", link.Attrs().Name)
		}
	}
	if names, _ := filepath.Glob(nsPath(l.id + "-*")); len(names) > 0 {
		t.Errorf("namespaces left: %v", names)
	}
	if tableExists(t, l.table) {
		t.Errorf("nftables table %s left", l.table)
	}
	if rules, err := Rules(l.table); err != nil || len(rules) > 0 {
		t.Errorf("Rules after cleanup: %q, %v", rules, err)
	}
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("nft", "list", "tables").CombinedOutput()
		if err != nil || strings.Contains(string(out), " "+l.table+"\n") {
			t.Errorf("nft list tables: %v\n%s", err, out)
		}
	}
}

func tableExists(t testing.TB, name string) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTableOfFamily(name, nftables.TableFamilyIPv4); err != nil {
		if isNotExist(err) {
			return false
		}
		t.Fatal(err)
	}
	return true
}

func nsPath(name string) string { return filepath.Join("/run/netns", name) }

// newNamedNetns makes a namespace pinned at /run/netns/name, as `ip netns
// add` does. The thread that made it stays in it and ends with its
// goroutine (locked, never unlocked), so no other goroutine runs there.
func newNamedNetns(name string) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		errc <- func() error {
			h, err := netns.NewNamed(name)
			if err != nil {
				return fmt.Errorf("netns %s: %w", name, err)
			}
			h.Close()
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			return err
		}()
	}()
	return <-errc
}

// deleteNamedNetns unpins a namespace made by newNamedNetns, also one
// whose making failed half-way (a file not mounted on).
func deleteNamedNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// inNetns runs fn on a thread in the named namespace (the host's for "").
// Sockets made by fn stay in that namespace after it returns.
func inNetns(name string, fn func() error) error {
	if name == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		err = fn()
		// The thread goes back to the pool only if it is back home;
		// otherwise it ends with the goroutine.
		if netns.Set(orig) == nil {
			goruntime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// addNode adds a namespace standing in for another node of the
// cluster: its own address, on a link of its own to the host, and
// servers on the lab's published ports, as that node's own rules would
// answer there. It returns the node and the host's address on the link,
// the source that masquerade gives what the host sends there.
func (l *lab) addNode(name string) (node labTask, via netip.Addr) {
	t := l.t
	t.Helper()
	k := byte(len(l.nodes))
	if k >= 60 {
		t.Fatal("too many nodes")
	}
	x := l.client.As4()[2]
	via = netip.AddrFrom4([4]byte{10, 251, x, 4*k + 5})
	node = labTask{name: name, ns: l.id + "-" + name, addr: netip.AddrFrom4([4]byte{10, 251, x, 4*k + 6})}
	l.nodes = append(l.nodes, node)
	l.addNs(node.ns, l.id+"-"+name, netip.PrefixFrom(node.addr, 30), via, nil)
	host, err := netlink.LinkByName(l.id + "-" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(via, 30))}); err != nil {
		t.Fatal(err)
	}
	l.serveOn(node, l.pub)
	l.serveOn(node, l.pubUDP)
	return node, via
}

// serve starts the task's servers on the lab's target port.
func (l *lab) serve(task labTask) { l.serveOn(task, l.target) }

// serveOn starts the task's servers on port. TCP: a line "<name> <client
// address>", then every line it reads, echoed. UDP: each datagram is
// answered with the same line.
func (l *lab) serveOn(task labTask, p uint16) {
	t := l.t
	t.Helper()
	var ln net.Listener
	var pc net.PacketConn
	port := strconv.Itoa(int(p))
	err := inNetns(task.ns, func() (err error) {
		if ln, err = net.Listen("tcp4", ":"+port); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp4", ":"+port)
		return err
	})
	if err != nil {
		t.Fatalf("servers of %s: %v", task.name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fmt.Fprintf(c, "%s %s\n", task.name, c.RemoteAddr().(*net.TCPAddr).IP)
				io.Copy(c, c)
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			fmt.Fprintf(writerTo{pc, from}, "%s %s\n", task.name, from.(*net.UDPAddr).IP)
		}
	}()
}

type writerTo struct {
	pc net.PacketConn
	to net.Addr
}

func (w writerTo) Write(b []byte) (int, error) { return w.pc.WriteTo(b, w.to) }

// reply is what a task's server answered.
type reply struct {
	task   string // its name
	source string // the client address it saw
}

// dialTCP connects from the namespace ns (the host's for "") to addr and
// returns the task's greeting and the connection, which the test closes.
func dialTCP(ns string, addr netip.AddrPort) (reply, net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), 2*time.Second)
		return err
	})
	if err != nil {
		return reply{}, nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		return reply{}, nil, fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	return parseReply(line), c, nil
}

// askTCP is dialTCP for one question: the connection is closed.
func askTCP(ns string, addr netip.AddrPort) (reply, error) {
	r, c, err := dialTCP(ns, addr)
	if c != nil {
		c.Close()
	}
	return r, err
}

// askUDP sends a datagram from a new socket in ns to addr and waits for
// the answer.
func askUDP(ns string, addr netip.AddrPort) (reply, error) {
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.Dial("udp4", addr.String())
		return err
	})
	if err != nil {
		return reply{}, err
	}
	defer c.Close()
	return udpRoundTrip(c)
}

func udpRoundTrip(c net.Conn) (reply, error) {
	if _, err := c.Write([]byte("q")); err != nil {
		return reply{}, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return reply{}, err
	}
	return parseReply(string(buf[:n])), nil
}

func parseReply(line string) reply {
	name, src, _ := strings.Cut(strings.TrimSpace(line), " ")
	return reply{task: name, source: src}
}

// freePort returns a port on which nothing of the host listens now.
func freePort(t *testing.T, proto string) uint16 {
	t.Helper()
	var addr net.Addr
	if proto == "udp" {
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr()
		c.Close()
	} else {
		ln, err := net.Listen("tcp4", ":0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr()
		ln.Close()
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Port()
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// backends returns the addresses of the lab's tasks of the given indexes
// (all if none is given).
func (l *lab) backends(idx ...int) []netip.Addr {
	if len(idx) == 0 {
		for i := range l.tasks {
			idx = append(idx, i)
		}
	}
	var out []netip.Addr
	for _, i := range idx {
		out = append(out, l.tasks[i].addr)
	}
	return out
}

// count asks n times and counts the answers by task; every answer must
// have seen source wantSource (if not empty).
func count(t *testing.T, n int, ask func() (reply, error), wantSource string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		r, err := ask()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if wantSource != "" && r.source != wantSource {
			t.Errorf("request %d: %s saw source %s, want %s", i, r.task, r.source, wantSource)
		}
		got[r.task]++
	}
	return got
}

// assertSpread fails unless exactly the named tasks answered, each at
// least min times.
func assertSpread(t *testing.T, got map[string]int, min int, names ...string) {
	t.Helper()
	if len(got) != len(names) {
		t.Errorf("answers %v, want only and all of %v", got, names)
	}
	for _, n := range names {
		if got[n] < min {
			t.Errorf("task %s answered %d times, want at least %d (all: %v)", n, got[n], min, got)
		}
	}
}

// nftList returns `nft list table ip <table>`, for logs.
func nftList(table string) string {
	out, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil && !errors.Is(err, exec.ErrNotFound) {
		return fmt.Sprintf("nft: %v\n%s", err, out)
	}
	return string(out)
}
