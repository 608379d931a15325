package testcluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Bridge port states (linux/if_bridge.h). With STP off, the bridge
// sets every port that is not disabled back to forwarding as soon as
// one changes state: only disabled sticks.
const (
	brStateDisabled   = 0
	brStateForwarding = 3
)

// nodeIf is the name of a node's interface inside its namespace.
const nodeIf = "eth0"

// ipNet converts a host address within p to the form netlink takes.
func ipNet(a netip.Addr, p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// createBridge makes the cluster's bridge with the gateway address and
// brings it up. STP stays off, so a port forwards as soon as it is up.
func createBridge(name string, gw netip.Addr, subnet netip.Prefix) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, TxQLen: -1}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add bridge %s: %w", name, err)
	}
	err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipNet(gw, subnet)})
	if err == nil {
		err = netlink.LinkSetUp(br)
	}
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	return nil
}

// attachNode gives the namespace pinned at nsPath an interface eth0 with
// addr, plugged into the bridge through a veth whose host end is named
// link, a default route through gw, and an up loopback.
func attachNode(nsPath, link, bridge string, addr, gw netip.Addr, subnet netip.Prefix) error {
	h, ns, err := nsHandle(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("look up bridge %s: %w", bridge, err)
	}
	// The node's end is made in its namespace under its final name, so
	// there is never an eth0 in the host's namespace.
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: link, MasterIndex: br.Attrs().Index, TxQLen: -1},
		PeerName:      nodeIf,
		PeerNamespace: netlink.NsFd(ns.Fd()),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", link, err)
	}
	host, err := netlink.LinkByName(link)
	if err == nil {
		err = netlink.LinkSetUp(host)
	}
	if err != nil {
		return fmt.Errorf("veth %s: %w", link, err)
	}
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("loopback up in %s: %w", nsPath, err)
	}
	eth, err := h.LinkByName(nodeIf)
	if err == nil {
		err = h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(addr, subnet)})
	}
	if err == nil {
		err = h.LinkSetUp(eth)
	}
	if err == nil {
		err = h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw.AsSlice()})
	}
	if err != nil {
		return fmt.Errorf("%s in %s: %w", nodeIf, nsPath, err)
	}
	return nil
}

// setPortState sets the state of the bridge port link, as
// `bridge link set dev LINK state N` does. A disabled port drops every
// frame in both directions while the link stays up, so the node sees a
// silent network, not a lost carrier.
func setPortState(link string, state uint8) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("look up %s: %w", link, err)
	}
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
	msg.Index = int32(l.Attrs().Index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
	info.AddRtAttr(nl.IFLA_BRPORT_STATE, []byte{state})
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("set bridge port %s to state %d: %w", link, state, err)
	}
	return nil
}

// linksIn lists the names of the links in the namespace pinned at
// nsPath, sorted.
func linksIn(nsPath string) ([]string, error) {
	h, ns, err := nsHandle(nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	defer h.Close()
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", nsPath, err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names, nil
}

// nftTablesIn lists the nftables tables of the namespace pinned at
// nsPath as "FAMILY NAME".
func nftTablesIn(nsPath string) ([]string, error) {
	ns, err := os.Open(nsPath)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return nil, err
	}
	tables, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nftables tables in %s: %w", nsPath, err)
	}
	var out []string
	for _, t := range tables {
		out = append(out, familyName(t.Family)+" "+t.Name)
	}
	slices.Sort(out)
	return out, nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprintf("family%d", f)
}

// dumpRetries is how often a netlink dump is tried again when links or
// addresses changed while it ran, as they do while other test processes
// make and remove their own.
const dumpRetries = 20

// retryDump calls dump until it succeeds with a consistent result.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return out, err
		}
	}
}

// deleteLinks removes the host's links named names, and those whose
// names start with prefix+"-" (what a half-made cluster may have left).
// Removing a veth's host end removes the node's end with it.
func deleteLinks(prefix string, names ...string) error {
	var errs []error
	del := func(name string) {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkDel(l)
		}
		var nf netlink.LinkNotFoundError
		if err != nil && !errors.As(err, &nf) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
		}
	}
	for _, name := range names {
		del(name)
	}
	rest, err := hostLinksWithPrefix(prefix)
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range rest {
		del(name)
	}
	return errors.Join(errs...)
}

// hostLinksWithPrefix lists the host's links whose names start with
// prefix+"-".
func hostLinksWithPrefix(prefix string) ([]string, error) {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if name := l.Attrs().Name; strings.HasPrefix(name, prefix+"-") {
			out = append(out, name)
		}
	}
	return out, nil
}
