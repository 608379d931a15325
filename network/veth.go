package network

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
)

// endpoint is one of a task's interfaces: a veth pair whose host end
// (host) is a port of the network's bridge and whose other end (ifName)
// is in the task's namespace.
type endpoint struct {
	netID  string
	host   string
	ifName string
	index  int
}

// addEndpoint makes the index-th interface of a task. The task's end is
// created directly inside the namespace under its final name, so there
// is never an eth0 in the host's namespace nor a rename to race with.
// m.mu is held.
func (m *Manager) addEndpoint(taskID string, index int, at attachment, b *bridge, h *netlink.Handle, ns *os.File) (endpoint, error) {
	var name string
	for salt := 0; salt < 8 && name == ""; salt++ {
		n := vethName(m.cfg.Prefix, taskID, index, salt)
		if _, err := netlink.LinkByName(n); isLinkNotFound(err) {
			name = n
		} else if err != nil {
			return endpoint{}, fmt.Errorf("look up link %s: %w", n, err)
		}
	}
	if name == "" {
		return endpoint{}, fmt.Errorf("%w: no free veth name for task %s", ErrConflict, taskID)
	}
	e := endpoint{netID: at.netID, host: name, ifName: ifName(index), index: index}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: name, MTU: at.mtu, TxQLen: -1},
		PeerName:         e.ifName,
		PeerHardwareAddr: macFor(at.addr.IP),
		PeerNamespace:    netlink.NsFd(ns.Fd()),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return endpoint{}, fmt.Errorf("add veth %s: %w", name, err)
	}
	// The alias records the owner for Restore; the kernel ignores one
	// given at creation. Until it is set, a crash leaves a veth without
	// owner, which Restore removes.
	err := netlink.LinkSetAlias(veth, vethAlias(taskID, at.netID, index))
	if err == nil {
		err = setupEndpoint(e, at, b, h)
	}
	if err != nil {
		return endpoint{}, errors.Join(err, deleteLink(name))
	}
	return e, nil
}

func setupEndpoint(e endpoint, at attachment, b *bridge, h *netlink.Handle) error {
	host, err := netlink.LinkByName(e.host)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMasterByIndex(host, b.index); err != nil {
		return fmt.Errorf("veth %s onto bridge %s: %w", e.host, b.name, err)
	}
	// Hairpin lets a frame leave by the port it came in on: a task that
	// connects to its own service's VIP may be sent back to itself.
	if err := netlink.LinkSetHairpin(host, true); err != nil {
		return fmt.Errorf("veth %s hairpin: %w", e.host, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("veth %s up: %w", e.host, err)
	}
	in, err := h.LinkByName(e.ifName)
	if err != nil {
		return fmt.Errorf("task side of %s: %w", e.host, err)
	}
	if err := h.AddrReplace(in, &netlink.Addr{IPNet: at.addr}); err != nil {
		return fmt.Errorf("%s address %s: %w", e.ifName, at.addr, err)
	}
	if err := h.LinkSetUp(in); err != nil {
		return fmt.Errorf("%s up: %w", e.ifName, err)
	}
	return nil
}

// setDefaultRoute routes the task's traffic for other destinations
// through a network's gateway.
func setDefaultRoute(h *netlink.Handle, e endpoint, at attachment) error {
	in, err := h.LinkByName(e.ifName)
	if err != nil {
		return err
	}
	if err := h.RouteReplace(&netlink.Route{LinkIndex: in.Attrs().Index, Gw: at.gw}); err != nil {
		return fmt.Errorf("default route via %s: %w", at.gw, err)
	}
	return nil
}

// deleteLink deletes a link of the host's namespace by name; a missing
// link is not an error. Deleting either end of a veth deletes both.
func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !isLinkNotFound(err) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}
