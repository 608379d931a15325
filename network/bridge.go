package network

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// bridge is one network's bridge on this node.
type bridge struct {
	netID    string
	name     string
	index    int
	gateways []*net.IPNet // its addresses: gateway IPs with subnet masks
	// vni is the VNI of an overlay network, 0 for a node-local one.
	vni uint32
	// vx names the VXLAN port of an overlay network's bridge once it
	// is there.
	vx string
}

// alias is what the bridge's alias says: its network, and its VNI for
// an overlay network.
func (b *bridge) alias() string {
	if b.vni != 0 {
		return overlayBridgeAlias(b.netID, b.vni)
	}
	return bridgeAlias(b.netID)
}

func (b *bridge) subnets() []*net.IPNet {
	out := make([]*net.IPNet, len(b.gateways))
	for i, g := range b.gateways {
		out[i] = subnetOf(g)
	}
	return out
}

// ensureBridge returns the bridge of at's network, making it if needed.
// m.mu is held.
func (m *Manager) ensureBridge(at attachment) (*bridge, error) {
	if b, ok := m.bridges[at.netID]; ok {
		// An overlay bridge whose VXLAN port a crash cut short, or
		// whose network got its VNI from the allocator since.
		if at.vni != 0 && (b.vx == "" || b.vni != at.vni) {
			if err := m.setupOverlay(b, at.vni); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
	// Two bridges with overlapping subnets would make the host's routes
	// ambiguous; the allocator should never hand out such networks.
	for _, other := range m.bridges {
		for _, s := range other.subnets() {
			for _, g := range at.gateways {
				if overlaps(s, subnetOf(g)) {
					return nil, fmt.Errorf("%w: subnet %s of network %s overlaps %s of network %s", ErrConflict, subnetOf(g), at.netID, s, other.netID)
				}
			}
		}
	}
	for salt := 0; salt < 8; salt++ {
		name := bridgeName(m.cfg.Prefix, at.netID, salt)
		l, err := netlink.LinkByName(name)
		if err != nil && !isLinkNotFound(err) {
			return nil, fmt.Errorf("look up bridge %s: %w", name, err)
		}
		if err == nil {
			o, ok := parseAlias(l.Attrs().Alias)
			switch {
			case ok && !o.isVeth() && o.netID == at.netID && l.Type() == "bridge":
				// Ours from before a restart that nobody restored:
				// adopt it (setup is idempotent).
			case !ok:
				// Ours by name but without an owner: a create cut
				// short by a crash.
				m.log.Warn("removing unfinished bridge", "link", name)
				if err := netlink.LinkDel(l); err != nil && !isLinkNotFound(err) {
					return nil, fmt.Errorf("remove unfinished bridge %s: %w", name, err)
				}
				l = nil
			default:
				continue // another network's, or not a bridge: next name
			}
		} else {
			l = nil
		}
		b := &bridge{netID: at.netID, name: name, gateways: at.gateways, vni: at.vni}
		created := false
		if l == nil {
			if l, err = createBridge(name, b.alias(), at.mtu); err != nil {
				return nil, err
			}
			created = true
		}
		b.index = l.Attrs().Index
		if err := m.setupBridge(l, b); err != nil {
			if created {
				err = errors.Join(err, m.deleteBridge(b))
			}
			return nil, err
		}
		m.bridges[at.netID] = b
		m.log.Info("bridge up", "network.id", at.netID, "link", name, "created", created)
		return b, nil
	}
	return nil, fmt.Errorf("%w: no free bridge name for network %s", ErrConflict, at.netID)
}

// createBridge adds the bridge link and names its network in the alias
// at once (the kernel ignores an alias given at creation): a crash in
// between leaves a bridge without owner, which Restore removes. The MAC
// is random but set explicitly: a bridge with a MAC of its own keeps it,
// instead of taking on its ports' as they come and go, which would change
// the gateway's MAC under the tasks.
func createBridge(name, alias string, mtu int) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{
		Name: name, MTU: mtu, TxQLen: -1, HardwareAddr: randomMAC(),
	}}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge %s: %w", name, err)
	}
	err := netlink.LinkSetAlias(br, alias)
	var l netlink.Link
	if err == nil {
		l, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("bridge %s: %w", name, err), deleteLink(name))
	}
	return l, nil
}

// setupBridge brings a bridge to the state Attach needs; every step can
// run again on a bridge that has it already.
func (m *Manager) setupBridge(l netlink.Link, b *bridge) error {
	if l.Attrs().Alias != b.alias() {
		if err := netlink.LinkSetAlias(l, b.alias()); err != nil {
			return fmt.Errorf("bridge %s alias: %w", b.name, err)
		}
	}
	if err := setBridgeNoSTP(b.index); err != nil {
		return fmt.Errorf("bridge %s forward delay: %w", b.name, err)
	}
	for _, g := range b.gateways {
		if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: g}); err != nil {
			return fmt.Errorf("bridge %s address %s: %w", b.name, g, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bridge %s up: %w", b.name, err)
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	if err := m.applyVIPs(b); err != nil {
		return err
	}
	if err := m.fw.addBridge(b.name, b.subnets()); err != nil {
		return err
	}
	if b.vni == 0 {
		return nil
	}
	if err := m.ensureVxlan(b); err != nil {
		return err
	}
	return m.applyPeers(b)
}

// SetVIPs sets the service virtual IPs of every network, by network id.
// Each network's bridge on this node carries its VIPs as /32 addresses,
// now and whenever it is made again, so that the node answers ARP for
// them: a task's connection to a VIP of its own subnet then reaches the
// host, where the kernel load balancer (lb/dnat) sends it to a task.
// Networks missing from vips lose their VIPs.
func (m *Manager) SetVIPs(vips map[string][]net.IP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vips = make(map[string][]net.IP, len(vips))
	for id, list := range vips {
		m.vips[id] = slices.Clone(list)
	}
	var errs []error
	for _, b := range m.bridges {
		errs = append(errs, m.applyVIPs(b))
	}
	return errors.Join(errs...)
}

// applyVIPs makes b's /32 addresses equal the VIPs of its network. m.mu
// is held.
func (m *Manager) applyVIPs(b *bridge) error {
	l, err := netlink.LinkByIndex(b.index)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", b.name, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", b.name, err)
	}
	want := map[string]bool{}
	for _, ip := range m.vips[b.netID] {
		if ip4 := ip.To4(); ip4 != nil {
			want[ip4.String()] = true
		}
	}
	var errs []error
	for _, a := range addrs {
		if ones, bits := a.Mask.Size(); ones != bits {
			continue // a gateway
		}
		if want[a.IP.String()] {
			delete(want, a.IP.String())
			continue
		}
		if err := netlink.AddrDel(l, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("bridge %s: remove VIP %s: %w", b.name, a.IP, err))
		}
	}
	for ip := range want {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(32, 32)}}
		if err := netlink.AddrReplace(l, a); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: add VIP %s: %w", b.name, ip, err))
		}
	}
	return errors.Join(errs...)
}

// deleteBridge removes a bridge, its VXLAN port and its firewall rules.
// The port goes by its name, also when the Manager did not record it (a
// crash before its alias was written). m.mu is held.
func (m *Manager) deleteBridge(b *bridge) error {
	err := m.fw.removeBridge(b.name)
	err = errors.Join(err, deleteLink(vxlanName(m.cfg.Prefix, b.name)))
	if l, lerr := netlink.LinkByName(b.name); lerr == nil {
		if derr := netlink.LinkDel(l); derr != nil && !isLinkNotFound(derr) {
			err = errors.Join(err, fmt.Errorf("delete bridge %s: %w", b.name, derr))
		}
	} else if !isLinkNotFound(lerr) {
		err = errors.Join(err, lerr)
	}
	if err == nil {
		delete(m.bridges, b.netID)
		m.log.Info("bridge removed", "network.id", b.netID, "link", b.name)
	}
	return err
}

// inUse reports whether a task of the manager has an endpoint on network
// netID. m.mu is held.
func (m *Manager) inUse(netID string) bool {
	for _, t := range m.tasks {
		for _, e := range t.endpoints {
			if e.netID == netID {
				return true
			}
		}
	}
	return false
}

// releaseBridges removes the bridges of netIDs that no task uses any more.
// m.mu is held.
func (m *Manager) releaseBridges(netIDs []string) error {
	var errs []error
	for _, id := range netIDs {
		if b, ok := m.bridges[id]; ok && !m.inUse(id) {
			errs = append(errs, m.deleteBridge(b))
		}
	}
	return errors.Join(errs...)
}

// setBridgeNoSTP turns STP off and the forward delay to zero, so that a
// new port forwards at once instead of spending 15 s in listening and
// learning. netlink (rather than /sys/class/net/…/bridge) is used because
// sysfs shows the devices of the namespace it was mounted in, which is
// not ours when the agent runs in a network namespace of its own (as in
// the e2e tests).
func setBridgeNoSTP(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_BR_STP_STATE, nl.Uint32Attr(0))
	data.AddRtAttr(nl.IFLA_BR_FORWARD_DELAY, nl.Uint32Attr(0))
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// enableForwarding turns on IPv4 forwarding, without which the host
// neither routes tasks' traffic out nor NATs it. /proc/sys/net shows the
// namespace of the process that opens it, so this is the agent's
// namespace. It is left on at Cleanup: other software may rely on it by
// then, as it does after Docker.
func enableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

// randomMAC is a random unicast, locally administered MAC.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
