package network

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/internal/testutil"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// testEnv is one Manager with a prefix, table and run dir of its own, so
// that tests run beside each other and beside a real node; whatever
// happens, the test ends with Cleanup and a check that nothing is left.
type testEnv struct {
	t   *testing.T
	cfg Config
	m   *Manager
	// base is a random 100.64.0.0/10 /16 for the test's subnets, so that
	// tests running at once on the machine do not route into each other.
	base [2]byte
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	testutil.RequiresRoot(t)
	b := make([]byte, 2)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	cfg := Config{RunDir: t.TempDir(), Prefix: "sht" + suffix, Table: "sht" + suffix}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, cfg: cfg, m: m, base: [2]byte{64 + b[0]%64, b[1]}}
	t.Cleanup(func() {
		// A fresh Manager, as after a crash: Cleanup must not need state.
		fresh, err := New(cfg)
		if err == nil {
			err = fresh.Cleanup()
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		e.assertClean()
	})
	return e
}

// subnet returns the test's i-th /24.
func (e *testEnv) subnet(i int) string {
	return fmt.Sprintf("100.%d.%d.0/24", e.base[0], int(e.base[1])+i)
}

// addr returns host address h of the test's i-th /24, with its length.
func (e *testEnv) addr(i, h int) string {
	return fmt.Sprintf("100.%d.%d.%d/24", e.base[0], int(e.base[1])+i, h)
}

func (e *testEnv) network(i int) *typesv1.Network { return network(identity.NewID(), e.subnet(i), "") }

func (e *testEnv) attach(taskID string, atts ...*typesv1.NetworkAttachment) (nsPath, ip string) {
	e.t.Helper()
	nsPath, ip, err := e.m.Attach(taskID, atts)
	if err != nil {
		e.t.Fatal(err)
	}
	return nsPath, ip
}

// assertClean fails the test if a link, namespace file, mount or the
// table of the test's prefix is still there.
func (e *testEnv) assertClean() {
	t := e.t
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, e.cfg.Prefix) {
			t.Errorf("link %s left", l.Attrs().Name)
		}
	}
	if _, err := os.Stat(filepath.Join(e.cfg.RunDir, "netns")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns dir left: %v", err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), e.cfg.RunDir) {
		t.Errorf("mount under %s left", e.cfg.RunDir)
	}
	if ok, err := e.m.fw.tableExists(); err != nil || ok {
		t.Errorf("nftables table %s left (%v)", e.cfg.Table, err)
	}
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("nft", "list", "tables").CombinedOutput()
		if err != nil || strings.Contains(string(out), " "+e.cfg.Table+"\n") {
			t.Errorf("nft list tables: %v\n%s", err, out)
		}
	}
}

// inNetns runs fn on a thread in the namespace at path. Sockets made by
// fn stay in that namespace after it returns, so a listener made here can
// be served from any goroutine.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
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

// listen starts a TCP server in the namespace at path (the host's for
// "") that writes the remote address of each connection and closes it.
func listen(t *testing.T, path, ip string) string {
	t.Helper()
	var ln net.Listener
	mk := func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(ip, "0"))
		return err
	}
	var err error
	if path == "" {
		err = mk()
	} else {
		err = inNetns(path, mk)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
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
	return ln.Addr().String()
}

// dial connects from the namespace at path (the host's for "") to addr
// and returns the source address the server saw.
func dial(path, addr string, timeout time.Duration) (string, error) {
	var seen string
	do := func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		seen = strings.TrimSpace(line)
		return nil
	}
	if path == "" {
		return seen, do()
	}
	return seen, inNetns(path, do)
}

// nsLinks lists the links of a namespace by name.
func nsLinks(t *testing.T, path string) map[string]netlink.Link {
	t.Helper()
	h, f, err := nsHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]netlink.Link{}
	for _, l := range links {
		out[l.Attrs().Name] = l
	}
	return out
}

func ipOf(cidr string) string { return strings.Split(cidr, "/")[0] }

func TestAttachNamespaceAndSameNetwork(t *testing.T) {
	e := newTestEnv(t)
	n := e.network(0)
	nsA, ipA := e.attach("taska", attach(n, e.addr(0, 5)))
	nsB, ipB := e.attach("taskb", attach(n, e.addr(0, 6)))
	if nsA != filepath.Join(e.cfg.RunDir, "netns", "taska") || ipA != ipOf(e.addr(0, 5)) || ipB != ipOf(e.addr(0, 6)) {
		t.Fatalf("Attach = %s %s, %s %s", nsA, ipA, nsB, ipB)
	}
	if !isNetns(nsA) || !isNetns(nsB) {
		t.Fatal("namespace files are not namespaces")
	}
	gw := net.ParseIP(ipOf(e.addr(0, 1)))

	// Inside: lo and eth0 only, both up; eth0 with the address, the
	// network's MTU and a MAC from the address; default route via the
	// gateway.
	links := nsLinks(t, nsA)
	if len(links) != 2 || links["lo"] == nil || links["eth0"] == nil {
		t.Fatalf("links in task namespace: %v", slices.Collect(mapKeys(links)))
	}
	eth0 := links["eth0"]
	if eth0.Attrs().Flags&net.FlagUp == 0 || links["lo"].Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo or eth0 is down")
	}
	if eth0.Attrs().MTU != 1500 || eth0.Attrs().HardwareAddr.String() != macFor(net.ParseIP(ipA)).String() {
		t.Errorf("eth0 mtu %d mac %s", eth0.Attrs().MTU, eth0.Attrs().HardwareAddr)
	}
	h, f, err := nsHandle(nsA)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer h.Close()
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != e.addr(0, 5) {
		t.Errorf("eth0 addresses: %v %v", addrs, err)
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var def *netlink.Route
	for i, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			def = &routes[i]
		}
	}
	if def == nil || !def.Gw.Equal(gw) || def.LinkIndex != eth0.Attrs().Index {
		t.Errorf("default route: %+v", def)
	}

	// The host: the bridge with the gateway address, up, STP off; the
	// veths on it with hairpin.
	br, err := netlink.LinkByName(bridgeName(e.cfg.Prefix, n.Id, 0))
	if err != nil {
		t.Fatal(err)
	}
	baddrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(baddrs) != 1 || !baddrs[0].IP.Equal(gw) || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("bridge %s: addresses %v flags %v", br.Attrs().Name, baddrs, br.Attrs().Flags)
	}
	if got := e.m.Gateways(); len(got) != 1 || !got[n.Id].Equal(gw) {
		t.Errorf("Gateways() = %v", got)
	}
	if out, err := exec.Command("ip", "-d", "link", "show", "dev", br.Attrs().Name).CombinedOutput(); err == nil &&
		!strings.Contains(string(out), "forward_delay 0 ") {
		t.Errorf("bridge forward delay not 0:\n%s", out)
	}
	ep := e.m.tasks["taska"].endpoints[0]
	host, err := netlink.LinkByName(ep.host)
	if err != nil || host.Attrs().MasterIndex != br.Attrs().Index || len(ep.host) > ifNameMax {
		t.Fatalf("host veth %s: %v", ep.host, err)
	}
	if pi, err := netlink.LinkGetProtinfo(host); err != nil || !pi.Hairpin {
		t.Errorf("hairpin on %s: %+v %v", ep.host, pi, err)
	}

	// A reaches B directly, without NAT, and the gateway answers too.
	addrB := listen(t, nsB, ipB)
	seen, err := dial(nsA, addrB, 3*time.Second)
	if err != nil || seen != ipA {
		t.Errorf("A → B: seen %q, %v", seen, err)
	}
	if _, err := exec.LookPath("ping"); err == nil {
		if out, err := exec.Command("nsenter", "--net="+nsA, "ping", "-c1", "-W1", ipB).CombinedOutput(); err != nil {
			t.Errorf("ping from A to B: %v\n%s", err, out)
		}
	}
	addrGw := listen(t, "", gw.String())
	if seen, err := dial(nsA, addrGw, 3*time.Second); err != nil || seen != ipA {
		t.Errorf("A → gateway: seen %q, %v", seen, err)
	}

	if _, err := exec.LookPath("nft"); err == nil {
		out, _ := exec.Command("nft", "list", "table", "inet", e.cfg.Table).CombinedOutput()
		t.Logf("nft list table inet %s:\n%s", e.cfg.Table, out)
	}

	// Attach again changes nothing.
	ns2, ip2, err := e.m.Attach("taska", []*typesv1.NetworkAttachment{attach(n, e.addr(0, 5))})
	if err != nil || ns2 != nsA || ip2 != ipA {
		t.Fatalf("second Attach = %s %s %v", ns2, ip2, err)
	}
	if again, err := netlink.LinkByName(ep.host); err != nil || again.Attrs().Index != host.Attrs().Index {
		t.Errorf("second Attach recreated the veth: %v", err)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestNetworksIsolated(t *testing.T) {
	e := newTestEnv(t)
	n1, n2 := e.network(0), e.network(1)
	nsA, ipA := e.attach("taska", attach(n1, e.addr(0, 5)))
	nsC, ipC := e.attach("taskc", attach(n2, e.addr(1, 5)))
	// D is on both networks: eth0 on n1, eth1 on n2.
	nsD, ipD := e.attach("taskd", attach(n1, e.addr(0, 7)), attach(n2, e.addr(1, 7)))

	addrA := listen(t, nsA, ipA)
	addrC := listen(t, nsC, ipC)
	// Both listeners answer the host, so a failure below is the
	// isolation and not a dead listener or a missing route.
	for _, a := range []string{addrA, addrC} {
		if _, err := dial("", a, 3*time.Second); err != nil {
			t.Fatalf("host → %s: %v", a, err)
		}
	}
	if seen, err := dial(nsA, addrC, time.Second); err == nil {
		t.Errorf("A (network 1) reached C (network 2), seen as %s", seen)
	}
	if seen, err := dial(nsC, addrA, time.Second); err == nil {
		t.Errorf("C (network 2) reached A (network 1), seen as %s", seen)
	}
	// A task on both networks reaches both, from its address on each.
	if seen, err := dial(nsD, addrA, 3*time.Second); err != nil || seen != ipD {
		t.Errorf("D → A: seen %q, %v", seen, err)
	}
	if seen, err := dial(nsD, addrC, 3*time.Second); err != nil || seen != ipOf(e.addr(1, 7)) {
		t.Errorf("D → C: seen %q, %v", seen, err)
	}
	if links := nsLinks(t, nsD); links["eth0"] == nil || links["eth1"] == nil {
		t.Errorf("task on two networks has links %v", slices.Collect(mapKeys(links)))
	}
	if len(e.m.Gateways()) != 2 {
		t.Errorf("Gateways() = %v", e.m.Gateways())
	}
}

// TestOutboundNAT routes a task's connection through the host to an
// "outside" namespace on a veth of the host (traffic stays on this
// machine): the outside server sees the host's address, not the task's.
func TestOutboundNAT(t *testing.T) {
	e := newTestEnv(t)
	nsA, ipA := e.attach("taska", attach(e.network(0), e.addr(0, 5)))

	outsidePath := filepath.Join(t.TempDir(), "outside")
	if err := createNetns(outsidePath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteNetns(outsidePath) })
	h, f, err := nsHandle(outsidePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer h.Close()
	r, _ := rand.Int(rand.Reader, big.NewInt(60))
	hostAddr := fmt.Sprintf("198.18.%d.1/30", 100+r.Int64())
	outAddr := fmt.Sprintf("198.18.%d.2/30", 100+r.Int64())
	hostName := e.cfg.Prefix + "-o0" // removed by Cleanup with the rest
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostName, TxQLen: -1}, PeerName: "eth0", PeerNamespace: netlink.NsFd(f.Fd())}); err != nil {
		t.Fatal(err)
	}
	hostLink, err := netlink.LinkByName(hostName)
	if err != nil {
		t.Fatal(err)
	}
	hostIP, _ := netlink.ParseAddr(hostAddr)
	if err := netlink.AddrAdd(hostLink, hostIP); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(hostLink); err != nil {
		t.Fatal(err)
	}
	outLink, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	outIP, _ := netlink.ParseAddr(outAddr)
	if err := h.AddrAdd(outLink, outIP); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(outLink); err != nil {
		t.Fatal(err)
	}

	// The outside has no route back to the task's subnet: only NAT makes
	// the connection work at all.
	srv := listen(t, outsidePath, ipOf(outAddr))
	seen, err := dial(nsA, srv, 3*time.Second)
	if err != nil {
		t.Fatalf("task → outside: %v", err)
	}
	if seen != ipOf(hostAddr) {
		t.Errorf("outside saw %s, want the host's %s (task %s)", seen, ipOf(hostAddr), ipA)
	}
	// The host's own addresses on other interfaces answer too.
	if seen, err := dial(nsA, listen(t, "", ipOf(hostAddr)), 3*time.Second); err != nil {
		t.Errorf("task → host address %s: %v (seen %s)", hostAddr, err, seen)
	}
	// The outside cannot open connections to the task (no route in, and
	// the forward rules drop it even when routed).
	if err := h.RouteAdd(&netlink.Route{Dst: mustCIDR(e.subnet(0)), Gw: net.ParseIP(ipOf(hostAddr))}); err != nil {
		t.Fatal(err)
	}
	if seen, err := dial(outsidePath, listen(t, nsA, ipA), time.Second); err == nil {
		t.Errorf("outside reached the task, seen as %s", seen)
	}
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func TestDetachRemovesBridgeAndRules(t *testing.T) {
	e := newTestEnv(t)
	n1, n2 := e.network(0), e.network(1)
	nsA, _ := e.attach("taska", attach(n1, e.addr(0, 5)))
	e.attach("taskb", attach(n1, e.addr(0, 6)))
	e.attach("taskc", attach(n2, e.addr(1, 6)))
	br1, br2 := bridgeName(e.cfg.Prefix, n1.Id, 0), bridgeName(e.cfg.Prefix, n2.Id, 0)
	rulesOf := func(br string) int {
		rules, err := e.m.fw.rules()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range rules {
			if c == br {
				n++
			}
		}
		return n
	}
	if rulesOf(br1) != 6 || rulesOf(br2) != 6 {
		t.Fatalf("rules: %d for %s, %d for %s; want 6 each", rulesOf(br1), br1, rulesOf(br2), br2)
	}
	hostA := e.m.tasks["taska"].endpoints[0].host

	if err := e.m.Detach("taska"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(nsA); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file of a detached task: %v", err)
	}
	if _, err := netlink.LinkByName(hostA); !isLinkNotFound(err) {
		t.Errorf("veth %s of a detached task: %v", hostA, err)
	}
	if _, err := netlink.LinkByName(br1); err != nil {
		t.Errorf("bridge with a task left was removed: %v", err)
	}
	if err := e.m.Detach("taskb"); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(br1); !isLinkNotFound(err) {
		t.Errorf("bridge %s without tasks: %v", br1, err)
	}
	if rulesOf(br1) != 0 || rulesOf(br2) != 6 {
		t.Errorf("after the last task of %s: %d rules left for it, %d for %s", br1, rulesOf(br1), rulesOf(br2), br2)
	}
	if gw := e.m.Gateways(); len(gw) != 1 || gw[n2.Id] == nil {
		t.Errorf("Gateways() = %v", gw)
	}
	if err := e.m.Detach("taskb"); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	if err := e.m.Detach("nosuchtask"); err != nil {
		t.Errorf("Detach of an unknown task: %v", err)
	}
	if err := e.m.Detach("taskc"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.cfg.RunDir, "netns")); len(ents) != 0 {
		t.Errorf("namespace files left: %v", ents)
	}
	if links, _ := e.m.ownLinks(); len(links) != 0 {
		t.Errorf("links left after the last Detach: %d", len(links))
	}
}

func TestAttachFailureUndoes(t *testing.T) {
	e := newTestEnv(t)
	n1 := e.network(0)
	// A network whose subnet overlaps n1's: the bridge of the second
	// attachment fails after the first endpoint is made.
	overlap := network(identity.NewID(), e.subnet(0), "")
	_, _, err := e.m.Attach("taskx", []*typesv1.NetworkAttachment{attach(n1, e.addr(0, 5)), attach(overlap, e.addr(0, 6))})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("Attach with overlapping subnets: %v", err)
	}
	if _, err := os.Stat(e.m.NsPath("taskx")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file after a failed Attach: %v", err)
	}
	if links, _ := e.m.ownLinks(); len(links) != 0 {
		t.Errorf("%d links after a failed Attach", len(links))
	}
	if rules, _ := e.m.fw.rules(); len(rules) != 0 {
		t.Errorf("rules after a failed Attach: %v", rules)
	}
	if len(e.m.Tasks()) != 0 || len(e.m.Gateways()) != 0 {
		t.Errorf("state after a failed Attach: %v %v", e.m.Tasks(), e.m.Gateways())
	}

	// With another task on n1, its bridge stays.
	e.attach("taska", attach(n1, e.addr(0, 5)))
	if _, _, err := e.m.Attach("taskx", []*typesv1.NetworkAttachment{attach(n1, e.addr(0, 6)), attach(overlap, e.addr(0, 7))}); err == nil {
		t.Fatal("Attach with overlapping subnets succeeded")
	}
	if links, _ := e.m.ownLinks(); len(links) != 2 { // taska's veth and the bridge
		t.Errorf("%d links after a failed Attach beside a task, want 2", len(links))
	}

	// Invalid attachments fail before anything is made.
	for _, atts := range [][]*typesv1.NetworkAttachment{
		{attach(n1)},
		{attach(n1, "192.0.2.1/24")},
	} {
		if _, _, err := e.m.Attach("tasky", atts); !errors.Is(err, ErrInvalid) {
			t.Errorf("Attach(%v) = %v, want ErrInvalid", atts, err)
		}
	}
	if _, _, err := e.m.Attach("../x", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Attach with a bad task id: %v", err)
	}
}

func TestRestore(t *testing.T) {
	e := newTestEnv(t)
	n1, n2 := e.network(0), e.network(1)
	nsA, ipA := e.attach("taska", attach(n1, e.addr(0, 5)))
	nsB, ipB := e.attach("taskb", attach(n1, e.addr(0, 6)))
	e.attach("taskc", attach(n2, e.addr(1, 5)))
	e.attach("taskd") // no networks: only loopback
	hostA := e.m.tasks["taska"].endpoints[0].host
	before, err := netlink.LinkByName(hostA)
	if err != nil {
		t.Fatal(err)
	}
	addrB := listen(t, nsB, ipB)

	// "Restart": a new Manager over the same run dir and prefix.
	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := m2.Tasks(); !slices.Equal(got, []string{"taska", "taskb", "taskc", "taskd"}) {
		t.Errorf("restored tasks %v", got)
	}
	want := e.m.Gateways()
	got := m2.Gateways()
	if len(got) != 2 || !got[n1.Id].Equal(want[n1.Id]) || !got[n2.Id].Equal(want[n2.Id]) {
		t.Errorf("restored gateways %v, want %v", got, want)
	}
	ns, ip, err := m2.Attach("taska", []*typesv1.NetworkAttachment{attach(n1, e.addr(0, 5))})
	if err != nil || ns != nsA || ip != ipA {
		t.Fatalf("Attach after restore = %s %s %v", ns, ip, err)
	}
	if after, err := netlink.LinkByName(hostA); err != nil || after.Attrs().Index != before.Attrs().Index {
		t.Errorf("Attach after restore recreated veth %s: %v", hostA, err)
	}
	if seen, err := dial(nsA, addrB, 3*time.Second); err != nil || seen != ipA {
		t.Errorf("A → B after restore: seen %q, %v", seen, err)
	}

	// A Manager that was not restored adopts on Attach and Detach too.
	m3, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := m3.Attach("taskc", []*typesv1.NetworkAttachment{attach(n2, e.addr(1, 5))}); err != nil {
		t.Fatal(err)
	}
	if len(m3.Tasks()) != 4 {
		t.Errorf("adopting Manager knows %v", m3.Tasks())
	}

	for _, id := range []string{"taska", "taskb"} {
		if err := m2.Detach(id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := netlink.LinkByName(bridgeName(e.cfg.Prefix, n1.Id, 0)); !isLinkNotFound(err) {
		t.Errorf("bridge of network 1 after its tasks were detached by the restored Manager: %v", err)
	}
	if err := m2.Detach("taskc"); err != nil {
		t.Fatal(err)
	}
	// Detach by a Manager that was not restored.
	m4, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m4.Detach("taskd"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m4.NsPath("taskd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace of taskd after Detach: %v", err)
	}
	if links, _ := m2.ownLinks(); len(links) != 0 {
		t.Errorf("%d links left", len(links))
	}
}

// TestRestoreTidiesCrashLeftovers: what a crash in the middle of Attach
// or Detach leaves is removed by Restore, and Attach starts over a task
// whose interfaces are incomplete.
func TestRestoreTidiesCrashLeftovers(t *testing.T) {
	e := newTestEnv(t)
	n1, n2 := e.network(0), e.network(1)
	e.attach("taska", attach(n1, e.addr(0, 5)), attach(n2, e.addr(1, 5)))
	e.attach("taskb", attach(n1, e.addr(0, 6)))
	// Crash leftovers: taska lost its second veth; taskb's namespace file
	// is gone but its veth is not; an empty namespace file; an unowned
	// veth of the prefix.
	if err := deleteLink(e.m.tasks["taska"].endpoints[1].host); err != nil {
		t.Fatal(err)
	}
	if err := deleteNetns(e.m.NsPath("taskb")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.m.NsPath("taske"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	stray := vethName(e.cfg.Prefix, "ghost", 0, 0)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: stray, TxQLen: -1}, PeerName: e.cfg.Prefix + "-peer"}); err != nil {
		t.Fatal(err)
	}
	// A link of the prefix that the manager would not have named so is
	// not touched by Restore (Cleanup removes it).
	keep := e.cfg.Prefix + "-keep"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: keep, TxQLen: -1}, PeerName: keep + "2"}); err != nil {
		t.Fatal(err)
	}

	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := m2.Tasks(); !slices.Equal(got, []string{"taska"}) {
		t.Errorf("restored tasks %v", got)
	}
	if _, err := netlink.LinkByName(stray); !isLinkNotFound(err) {
		t.Errorf("unowned veth kept: %v", err)
	}
	if _, err := netlink.LinkByName(keep); err != nil {
		t.Errorf("Restore removed %s, which is not its own: %v", keep, err)
	}
	if _, err := os.Stat(m2.NsPath("taske")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty namespace file kept: %v", err)
	}
	// n2's bridge lost its only port: gone.
	if _, ok := m2.Gateways()[n2.Id]; ok {
		t.Errorf("bridge without ports kept: %v", m2.Gateways())
	}
	nsA, ipA, err := m2.Attach("taska", []*typesv1.NetworkAttachment{attach(n1, e.addr(0, 5)), attach(n2, e.addr(1, 5))})
	if err != nil {
		t.Fatal(err)
	}
	if links := nsLinks(t, nsA); links["eth0"] == nil || links["eth1"] == nil || len(links) != 3 {
		t.Errorf("re-attached task has links %v", slices.Collect(mapKeys(links)))
	}
	if _, err := dial("", listen(t, nsA, ipA), 3*time.Second); err != nil {
		t.Errorf("host → re-attached task: %v", err)
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	e := newTestEnv(t)
	n1, n2 := e.network(0), e.network(1)
	e.attach("taska", attach(n1, e.addr(0, 5)))
	e.attach("taskb", attach(n1, e.addr(0, 6)), attach(n2, e.addr(1, 6)))
	// A Manager with no state removes it all.
	fresh, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Cleanup(); err != nil {
		t.Fatal(err)
	}
	e.assertClean()
	// And Cleanup of nothing is fine.
	if err := fresh.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadPrefix(t *testing.T) {
	for _, p := range []string{"toolongx", "Shl", "s-h"} {
		if _, err := New(Config{Prefix: p}); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(prefix %q) = %v", p, err)
		}
	}
	m, err := New(Config{})
	if err != nil || m.cfg.Prefix != DefaultPrefix || m.cfg.Table != DefaultTable || m.NsPath("x") != "/run/shoal/netns/x" {
		t.Errorf("defaults: %+v %v", m, err)
	}
}

// TestVIPsOnBridge: a network's VIPs are /32 addresses on its bridge, also
// on a bridge made after SetVIPs; they are not mistaken for gateways
// after a restart, and go when the network has none any more.
func TestVIPsOnBridge(t *testing.T) {
	e := newTestEnv(t)
	n1 := e.network(0)
	vip := net.ParseIP(ipOf(e.addr(0, 2)))
	if err := e.m.SetVIPs(map[string][]net.IP{n1.Id: {vip}}); err != nil {
		t.Fatal(err)
	}
	e.attach("taska", attach(n1, e.addr(0, 5)))
	br := bridgeName(e.cfg.Prefix, n1.Id, 0)
	vipsOf := func() []string {
		t.Helper()
		l, err := netlink.LinkByName(br)
		if err != nil {
			t.Fatal(err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range addrs {
			if ones, _ := a.Mask.Size(); ones == 32 {
				out = append(out, a.IP.String())
			}
		}
		return out
	}
	if got := vipsOf(); !slices.Equal(got, []string{vip.String()}) {
		t.Fatalf("VIPs on a new bridge: %v, want [%s]", got, vip)
	}
	gw := e.m.Gateways()[n1.Id]

	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := m2.Gateways()[n1.Id]; !got.Equal(gw) {
		t.Errorf("gateway after restore: %s, want %s", got, gw)
	}
	vip2 := net.ParseIP(ipOf(e.addr(0, 3)))
	if err := m2.SetVIPs(map[string][]net.IP{n1.Id: {vip2}}); err != nil {
		t.Fatal(err)
	}
	if got := vipsOf(); !slices.Equal(got, []string{vip2.String()}) {
		t.Errorf("VIPs after a change: %v, want [%s]", got, vip2)
	}
	if err := m2.SetVIPs(nil); err != nil {
		t.Fatal(err)
	}
	if got := vipsOf(); len(got) != 0 {
		t.Errorf("VIPs after SetVIPs(nil): %v", got)
	}
	if err := m2.Detach("taska"); err != nil {
		t.Fatal(err)
	}
}
