package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 pins named namespaces, so that `ip netns
// exec shbi1234-t0 ss -tn` works while the benchmark runs.
const netnsDir = "/run/netns"

// host is the node the benchmark builds, as package network builds one
// for a service's tasks: a bridge with every task in a network namespace
// of its own behind a veth, and a link to a client machine, whose host
// end holds the node's outside address, the one a user of a published
// port calls.
//
//	task ns i  eth0 10.249.X.(2+i)/24 ── <id>-v<i> ── bridge <id>-br 10.249.X.1/24 (the tasks' gateway)
//	client ns  eth0 10.248.X.2/30 ── <id>-pub 10.248.X.1/30 (the node's outside address)
//
// Every name starts with id ("shbi" and the benchmark's pid) and a dash,
// so that cleanup finds all of them and nothing of another run.
type host struct {
	id     string
	bridge string
	gw     netip.Addr   // the bridge's address
	subnet netip.Prefix // the tasks' network
	pub    netip.Addr   // the node's outside address
	tasks  []hostTask
	// client is the namespace of a machine outside, routed through the
	// node, and its address.
	client     string
	clientAddr netip.Addr
	// forwardWas is net.ipv4.ip_forward before the run, restored by
	// cleanup if the benchmark changed it.
	forwardWas string
}

// hostTask is one task's namespace and address.
type hostTask struct {
	name string // "task-1", …
	ns   string // path of the pinned namespace
	addr netip.Addr
}

// newHost builds the node with n tasks; on an error it removes what it
// made.
func newHost(n int) (h *host, err error) {
	id := "shbi" + strconv.Itoa(os.Getpid())
	h = &host{id: id, bridge: id + "-br"}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.cleanup())
			h = nil
		}
	}()
	x, err := freeOctet()
	if err != nil {
		return h, err
	}
	h.gw = netip.AddrFrom4([4]byte{10, 249, x, 1})
	h.subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 249, x, 0}), 24)
	h.pub = netip.AddrFrom4([4]byte{10, 248, x, 1})
	h.clientAddr = netip.AddrFrom4([4]byte{10, 248, x, 2})

	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return h, err
	}
	if v := strings.TrimSpace(string(b)); v != "1" {
		// The kernel path needs it on a node (the product turns it on):
		// connections from other hosts are forwarded to the tasks.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return h, fmt.Errorf("enable forwarding: %w", err)
		}
		h.forwardWas = v
	}

	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: h.bridge, TxQLen: -1}}); err != nil {
		return h, fmt.Errorf("bridge %s: %w", h.bridge, err)
	}
	br, err := netlink.LinkByName(h.bridge)
	if err != nil {
		return h, err
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(h.gw, 24))}); err != nil {
		return h, fmt.Errorf("address of %s: %w", h.bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return h, err
	}
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return h, err
	}
	for i := range n {
		t := hostTask{
			name: fmt.Sprintf("task-%d", i+1),
			ns:   filepath.Join(netnsDir, fmt.Sprintf("%s-t%d", id, i+1)),
			addr: netip.AddrFrom4([4]byte{10, 249, x, byte(2 + i)}),
		}
		if err := addNs(t.ns, fmt.Sprintf("%s-v%d", id, i+1), br, netip.PrefixFrom(t.addr, 24), h.gw); err != nil {
			return h, fmt.Errorf("%s: %w", t.name, err)
		}
		h.tasks = append(h.tasks, t)
	}
	h.client = filepath.Join(netnsDir, id+"-c")
	if err := addNs(h.client, id+"-pub", nil, netip.PrefixFrom(h.clientAddr, 30), h.pub); err != nil {
		return h, fmt.Errorf("client: %w", err)
	}
	out, err := netlink.LinkByName(id + "-pub")
	if err != nil {
		return h, err
	}
	if err := netlink.AddrAdd(out, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(h.pub, 30))}); err != nil {
		return h, fmt.Errorf("address of %s: %w", id+"-pub", err)
	}
	return h, nil
}

// freeOctet picks X for 10.249.X.0/24 and 10.248.X.0/24 such that no
// address or route of the host is in either.
func freeOctet() (byte, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, err
	}
	var used []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			used = append(used, p)
		}
	}
	for _, r := range routes {
		if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
			used = append(used, p)
		}
	}
	for range 100 {
		var b [1]byte
		rand.Read(b[:])
		x := b[0]
		free := true
		for _, mine := range []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 249, x, 0}), 24),
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 248, x, 0}), 24),
		} {
			for _, u := range used {
				free = free && !mine.Overlaps(u)
			}
		}
		if free {
			return x, nil
		}
	}
	return 0, errors.New("no free 10.249.X.0/24 and 10.248.X.0/24 on this host")
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok || !a.Unmap().Is4() {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// addNs makes a namespace pinned at ns with a veth to the host (eth0
// inside, hostLink outside, in bridge br unless nil), addr on eth0 and a
// default route via gw.
func addNs(ns, hostLink string, br netlink.Link, addr netip.Prefix, gw netip.Addr) error {
	if err := createNetns(ns); err != nil {
		return err
	}
	f, err := os.Open(ns)
	if err != nil {
		return err
	}
	defer f.Close()
	attrs := netlink.LinkAttrs{Name: hostLink, TxQLen: -1}
	if br != nil {
		attrs.MasterIndex = br.Attrs().Index
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(f.Fd())}); err != nil {
		return fmt.Errorf("veth %s: %w", hostLink, err)
	}
	out, err := netlink.LinkByName(hostLink)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(out); err != nil {
		return err
	}
	nh, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()))
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", ns, err)
	}
	defer nh.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := nh.LinkByName(name)
		if err != nil {
			return err
		}
		if name == "eth0" {
			if err := nh.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
				return fmt.Errorf("address %s: %w", addr, err)
			}
		}
		if err := nh.LinkSetUp(l); err != nil {
			return err
		}
		if name == "eth0" {
			if err := nh.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
				return fmt.Errorf("default route: %w", err)
			}
		}
	}
	return nil
}

// cleanup deletes the links and unpins the namespaces of the run (a
// namespace goes when its last process has exited and its last socket
// closed, so the tasks are stopped first), and restores forwarding. It
// is safe on a half-built host.
func (h *host) cleanup() error {
	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		// The veths first: deleting one end deletes its peer in the task's
		// namespace.
		if name := l.Attrs().Name; strings.HasPrefix(name, h.id+"-") && name != h.bridge {
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			}
		}
	}
	if br, err := netlink.LinkByName(h.bridge); err == nil {
		if err := netlink.LinkDel(br); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", h.bridge, err))
		}
	}
	pins, _ := filepath.Glob(filepath.Join(netnsDir, h.id+"-*"))
	for _, p := range pins {
		if err := deleteNetns(p); err != nil {
			errs = append(errs, err)
		}
	}
	if h.forwardWas != "" {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(h.forwardWas), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore net.ipv4.ip_forward=%s: %w", h.forwardWas, err))
		}
	}
	return errors.Join(errs...)
}

// leftovers names the links and namespaces of the run that are still
// there.
func (h *host) leftovers() []string {
	var left []string
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, h.id+"-") {
			left = append(left, "link "+l.Attrs().Name)
		}
	}
	pins, _ := filepath.Glob(filepath.Join(netnsDir, h.id+"-*"))
	for _, p := range pins {
		left = append(left, "namespace "+p)
	}
	return left
}

// createNetns makes a network namespace pinned at path, as `ip netns add`
// does. A locked thread unshares, pins its new namespace and moves back
// before it is unlocked; if it cannot move back it stays locked, and the
// runtime ends it rather than run other goroutines there.
func createNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if err != nil {
			err = fmt.Errorf("pin network namespace at %s: %w", path, err)
		}
		if netns.Set(home) == nil {
			goruntime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return errors.Join(err, deleteNetns(path))
	}
	return nil
}

// deleteNetns unpins and removes a namespace file; a missing or unmounted
// file is not an error.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// inNetns runs fn on a thread that joined the namespace pinned at path,
// and moves the thread back before it is unlocked (if it cannot, the
// runtime ends the thread). Sockets fn makes stay in that namespace.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			goruntime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if netns.Set(home) == nil {
			goruntime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// listenIn opens a TCP listener on port inside the namespace pinned at
// path, so that the benchmark's own goroutines can serve a task's address
// (the rotation tasks).
func listenIn(path string, port int) (net.Listener, error) {
	var l net.Listener
	err := inNetns(path, func() (err error) {
		l, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	return l, err
}

// dialerIn returns a DialContext whose connections start in the
// namespace pinned at path, or in the benchmark's own if path is "".
func dialerIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if path == "" {
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := inNetns(path, func() (err error) {
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// flushConntrack deletes the conntrack entries of the benchmark's flows:
// those answered by a task (direct, DNATed, and the proxies' dials) and
// those to the given ports on 127.0.0.1 and on the outside address
// (clients of the proxies). Runs
// with a new connection per request leave one or two entries per request
// for 120 s (TIME_WAIT); without this, each run would start with the
// previous runs' entries in the table and could fill it.
func (h *host) flushConntrack(ports ...uint16) error {
	var filters []netlink.CustomConntrackFilter
	f := &netlink.ConntrackFilter{}
	if err := f.AddIPNet(netlink.ConntrackReplySrcIP, ipNet(h.subnet)); err != nil {
		return err
	}
	filters = append(filters, f)
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), h.pub.AsSlice()} {
		for _, p := range ports {
			f := &netlink.ConntrackFilter{}
			if err := f.AddProtocol(unix.IPPROTO_TCP); err != nil {
				return err
			}
			if err := f.AddIP(netlink.ConntrackOrigDstIP, ip); err != nil {
				return err
			}
			if err := f.AddPort(netlink.ConntrackOrigDstPort, p); err != nil {
				return err
			}
			filters = append(filters, f)
		}
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("delete conntrack entries: %w", err)
	}
	return nil
}
