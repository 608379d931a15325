package network

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func (m *Manager) vxlanPort() int {
	if m.cfg.VXLANPort != 0 {
		return m.cfg.VXLANPort
	}
	return DefaultVXLANPort
}

// setupOverlay turns a bridge that exists into its overlay network's,
// with VNI vni: alias, VXLAN port and peers. m.mu is held.
func (m *Manager) setupOverlay(b *bridge, vni uint32) error {
	b.vni = vni
	l, err := netlink.LinkByIndex(b.index)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", b.name, err)
	}
	if l.Attrs().Alias != b.alias() {
		if err := netlink.LinkSetAlias(l, b.alias()); err != nil {
			return fmt.Errorf("bridge %s alias: %w", b.name, err)
		}
	}
	if err := m.ensureVxlan(b); err != nil {
		return err
	}
	return m.applyPeers(b)
}

// ensureVxlan gives an overlay bridge its VXLAN port, or checks the one
// it has: a device of the right name that is not what this Manager
// would make (another VNI, underlay address or port, or no owner after
// a crash) is made again. Every link of the prefix is the Manager's, so
// nobody else's device is removed. m.mu is held.
//
// The device has learning off (remote MACs come from SetPeers only, so
// a forged packet cannot move a task's MAC to another node) and its ARP
// proxy on (it answers ARP requests for remote tasks from its neighbour
// table and drops every other ARP frame, so that none crosses nodes).
// As a bridge port it learns nothing either: the bridge's entries for
// remote MACs are the static ones applyPeers installs.
func (m *Manager) ensureVxlan(b *bridge) error {
	if m.cfg.UnderlayAddr == nil {
		return fmt.Errorf("network %s: %w", b.netID, ErrNoUnderlay)
	}
	name := vxlanName(m.cfg.Prefix, b.name)
	l, err := netlink.LinkByName(name)
	switch {
	case isLinkNotFound(err):
		l = nil
	case err != nil:
		return fmt.Errorf("look up VXLAN device %s: %w", name, err)
	case !m.vxlanFits(l, b):
		m.log.Warn("replacing VXLAN device", "network.id", b.netID, "link", name)
		if err := deleteLink(name); err != nil {
			return err
		}
		l = nil
	}
	created := false
	if l == nil {
		if l, err = m.createVxlan(name, b); err != nil {
			return err
		}
		created = true
	}
	err = func() error {
		if l.Attrs().MasterIndex != b.index {
			if err := netlink.LinkSetMasterByIndex(l, b.index); err != nil {
				return fmt.Errorf("VXLAN device %s onto bridge %s: %w", name, b.name, err)
			}
		}
		if err := netlink.LinkSetLearning(l, false); err != nil {
			return fmt.Errorf("VXLAN device %s: bridge port learning off: %w", name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("VXLAN device %s up: %w", name, err)
		}
		return nil
	}()
	if err != nil {
		if created {
			err = errors.Join(err, deleteLink(name))
		}
		return err
	}
	b.vx = name
	if created {
		m.log.Info("VXLAN device up", "network.id", b.netID, "link", name, "vni", b.vni, "underlay", m.cfg.UnderlayAddr)
	}
	return nil
}

// vxlanFits reports whether l is the VXLAN device ensureVxlan would make
// for b.
func (m *Manager) vxlanFits(l netlink.Link, b *bridge) bool {
	vx, ok := l.(*netlink.Vxlan)
	return ok && l.Attrs().Alias == bridgeAlias(b.netID) &&
		vx.VxlanId == int(b.vni) && vx.SrcAddr.Equal(m.cfg.UnderlayAddr) && vx.Port == m.vxlanPort() &&
		!vx.Learning && vx.Proxy
}

// createVxlan adds the VXLAN device and writes its owner in the alias
// (which the kernel ignores at creation): a crash in between leaves a
// device without owner, which ensureVxlan replaces and deleteBridge
// removes by its name. Its MTU is its bridge's, which already allows for
// the encapsulation.
func (m *Manager) createVxlan(name string, b *bridge) (netlink.Link, error) {
	br, err := netlink.LinkByIndex(b.index)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", b.name, err)
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: name, MTU: br.Attrs().MTU, TxQLen: -1},
		VxlanId:   int(b.vni),
		SrcAddr:   m.cfg.UnderlayAddr,
		Port:      m.vxlanPort(),
		Learning:  false,
		Proxy:     true,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w: VXLAN device %s of network %s: VNI %d on UDP port %d is taken by another device on this node (another overlay network whose VNI collides, or another program): %v",
				ErrConflict, name, b.netID, b.vni, m.vxlanPort(), err)
		}
		return nil, fmt.Errorf("add VXLAN device %s: %w", name, err)
	}
	err = netlink.LinkSetAlias(vx, bridgeAlias(b.netID))
	var l netlink.Link
	if err == nil {
		l, err = netlink.LinkByName(name)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("VXLAN device %s: %w", name, err), deleteLink(name))
	}
	return l, nil
}

// applyPeers makes the entries of b's VXLAN port match the peers set for
// its network: per remote task, a static FDB entry of the VXLAN device
// (MAC → node), one of the bridge (MAC → the VXLAN port), and a
// permanent neighbour entry (IP → MAC) for the ARP proxy. Other entries
// of these kinds are removed, also those left by a Manager before a
// restart. Without a SetPeers for the network, the entries are left as
// they are, so that a restarted agent does not cut its tasks off until
// it has learnt the peers again. m.mu is held.
func (m *Manager) applyPeers(b *bridge) error {
	peers, known := m.peers[b.netID]
	if !known || b.vx == "" {
		return nil
	}
	l, err := netlink.LinkByName(b.vx)
	if err != nil {
		return fmt.Errorf("VXLAN device %s: %w", b.vx, err)
	}
	idx := l.Attrs().Index
	byMAC := map[string]Peer{}
	byIP := map[string]Peer{}
	for _, p := range peers {
		if why := m.unfitPeer(b, p); why != "" {
			m.log.Warn("peer left out", "network.id", b.netID, "peer.ip", p.IP, "peer.node", p.Node, "reason", why)
			continue
		}
		byMAC[p.MAC.String()] = p
		byIP[p.IP.String()] = p
	}
	var errs []error
	neighs, err := listNeigh(idx, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("neighbours of %s: %w", b.vx, err)
	}
	for _, n := range neighs {
		if _, ok := byIP[n.IP.String()]; !ok {
			errs = append(errs, ignoreNotFound(netlink.NeighDel(&netlink.Neigh{
				LinkIndex: idx, Family: netlink.FAMILY_V4, IP: n.IP,
			})))
		}
	}
	fdb, err := listNeigh(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("FDB of %s: %w", b.vx, err)
	}
	for _, e := range fdb {
		p, ok := byMAC[e.HardwareAddr.String()]
		switch {
		case e.MasterIndex != 0:
			// The bridge's entry. Its permanent one is the VXLAN
			// device's own MAC, which stays.
			if !ok && e.State&unix.NUD_PERMANENT == 0 {
				errs = append(errs, ignoreNotFound(netlink.NeighDel(&netlink.Neigh{
					LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
					HardwareAddr: e.HardwareAddr, Vlan: e.Vlan,
				})))
			}
		case !ok || !p.Node.Equal(e.IP):
			// The VXLAN device's, among them any all-zeros (flood)
			// entry: nothing of ours floods.
			errs = append(errs, ignoreNotFound(netlink.NeighDel(&netlink.Neigh{
				LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				HardwareAddr: e.HardwareAddr, IP: e.IP,
			})))
		}
	}
	for _, p := range peers {
		if _, ok := byIP[p.IP.String()]; !ok {
			continue
		}
		for _, n := range []*netlink.Neigh{
			{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: p.MAC, IP: p.Node},
			{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER, State: netlink.NUD_NOARP, HardwareAddr: p.MAC},
			{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: p.IP, HardwareAddr: p.MAC},
		} {
			if err := netlink.NeighSet(n); err != nil {
				errs = append(errs, fmt.Errorf("peer %s (%s on %s) on %s: %w", p.IP, p.MAC, p.Node, b.vx, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// unfitPeer says why p cannot be a peer on b's network, or "".
func (m *Manager) unfitPeer(b *bridge, p Peer) string {
	for _, g := range b.gateways {
		if g.IP.Equal(p.IP) {
			return "the address is the network's gateway, which every node answers for itself"
		}
	}
	if slices.ContainsFunc(m.vips[b.netID], p.IP.Equal) {
		return "the address is a service VIP, which every node answers for itself"
	}
	if containing(b.subnets(), p.IP) < 0 {
		return "the address is outside the network's subnets"
	}
	return ""
}

// listNeigh dumps the neighbour or FDB entries of one link, again when a
// concurrent change interrupts the dump.
func listNeigh(index, family int) ([]netlink.Neigh, error) {
	var out []netlink.Neigh
	var err error
	for range 5 {
		if out, err = netlink.NeighList(index, family); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return out, err
}

// ignoreNotFound drops the error of deleting an entry that is gone.
func ignoreNotFound(err error) error {
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}
