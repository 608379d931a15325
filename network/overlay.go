package network

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Overlay networks join the bridges of one network on every node into
// one L2 segment: each overlay bridge gets a VXLAN port (<prefix>-vx-…)
// whose VNI is the network's. The caller says where the network's other
// tasks are (SetPeers), and the manager programs, per remote task, a
// static FDB entry of the VXLAN device (its MAC → its node's underlay
// address), a static bridge FDB entry (its MAC → the VXLAN port) and a
// permanent neighbour entry on the VXLAN device (its IP → its MAC).
//
// ARP and broadcast: the VXLAN device runs with learning off and its ARP
// proxy on. The proxy answers a local task's ARP request for a remote
// task from the neighbour entries, and drops every ARP frame it cannot
// answer; there are no all-zeros (flood) FDB entries, so broadcast and
// unknown unicast are not sent to other nodes either. Nothing but
// unicast to a known remote task crosses nodes.
//
// The shared gateway: every node's bridge has the network's gateway
// address (.1), each with its own MAC. A task's ARP request for it is
// answered by its own node's bridge, and never leaves the node (the
// proxy has no entry for it: SetPeers leaves out a peer with the
// gateway's address or a service VIP), so a task's traffic for other
// networks goes out through its own node, as on a node-local network.
// The other side of this: the node itself reaches only its own tasks
// over the network, since a remote task answers the gateway address on
// its own node.
//
// Firewall: traffic between the tasks of one overlay network on
// different nodes is bridged, not routed. When br_netfilter hands
// bridged frames to the inet hooks, they come in and go out by the
// bridge itself: `iifname <br> accept` lets them through the forward
// chain and the masquerade rule (`oifname != <br>`) leaves them alone,
// so the receiving task sees the sender's own address. The VXLAN packets
// themselves are the node's own output, from its underlay address.

// ErrNoUnderlay marks an overlay network on a Manager that has no
// underlay address (Config.UnderlayAddr) to run VXLAN over.
var ErrNoUnderlay = errors.New("no underlay address for overlay networks")

// DefaultVXLANPort is the UDP port of VXLAN when Config.VXLANPort is 0:
// IANA's, and Docker swarm's, so that firewall rules people have keep
// working.
const DefaultVXLANPort = 4789

const (
	// driverOverlay and driverBridge are NetworkSpec.driver's values.
	driverOverlay = "overlay"
	driverBridge  = "bridge"
	// stackLabel marks the objects of a stack, whose networks are
	// overlay networks when their driver is not given, as compose's are
	// in swarm mode.
	stackLabel = "com.docker.stack.namespace"
	// vxlanOverhead is what VXLAN adds to a frame over an IPv4 underlay
	// (outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14): an overlay's
	// default MTU is the bridge default less this, 1450 as in Docker.
	// Over an IPv6 underlay it is 70; set the network's MTU option.
	vxlanOverhead = 50
	// maxVNI is the largest 24-bit VXLAN network identifier.
	maxVNI = 1<<24 - 1
)

func validVNI(v uint32) bool { return v >= 1 && v <= maxVNI }

// overlayVNI says whether n is an overlay network, by its driver, and if
// so returns its VNI (0 for a node-local network).
//
// The driver "overlay" makes an overlay and "bridge" a node-local
// network. Without a driver, a stack's network is an overlay (compose's
// default in swarm mode; the stack converter writes it out anyway) and
// any other is node-local, as `docker network create` makes a bridge by
// default. Other drivers are refused rather than run as something else.
//
// The VNI is the network's own (Network.vni) when the allocator set one.
// Otherwise it is derived from the network id (derivedVNI), which is
// stable across nodes and restarts without any coordination.
func overlayVNI(n *typesv1.Network) (uint32, error) {
	switch d := n.GetSpec().GetDriver(); d {
	case driverOverlay:
	case "":
		if _, ok := n.GetSpec().GetAnnotations().GetLabels()[stackLabel]; !ok {
			return 0, nil
		}
	case driverBridge:
		return 0, nil
	default:
		return 0, fmt.Errorf("%w: network %s: driver %q: want %s or %s", ErrInvalid, n.GetId(), d, driverOverlay, driverBridge)
	}
	if v := n.GetVni(); v != 0 {
		if !validVNI(v) {
			return 0, fmt.Errorf("%w: network %s: VNI %d is not 24-bit", ErrInvalid, n.GetId(), v)
		}
		return v, nil
	}
	return derivedVNI(n.GetId()), nil
}

// derivedVNI is a network's VNI when the allocator gave it none: 24 bits
// of a hash of its id, in 1..2^24-2 (0 and the all-ones VNI are avoided,
// as some switches reserve them).
//
// Two networks may draw the same VNI: with n overlay networks in a
// cluster the chance is about n²/2^25 (0.03% for 100 networks, 3% for
// 1000). On a node that has both, the second's VXLAN device cannot be
// made (the kernel refuses a VNI twice on one port) and Attach fails
// with ErrConflict, naming the VNI. On two different nodes, each with
// one of them, frames could cross between the two networks only to MACs
// the other node's tasks have, since nothing floods. The remedy is for
// the allocator to hand out VNIs (Network.vni), which take precedence.
func derivedVNI(netID string) uint32 {
	sum := sha256.Sum256([]byte("shoal/vni/" + netID))
	return 1 + binary.BigEndian.Uint32(sum[:4])%(maxVNI-1)
}

// Peer is a task of an overlay network on another node.
type Peer struct {
	// IP is the task's address on the network.
	IP net.IP
	// MAC is the task's interface's MAC. Nil means the one this package
	// gives a task with that address (02:42 and the address, as Docker),
	// which is what another node's Manager gave it.
	MAC net.HardwareAddr
	// Node is the underlay address of the task's node, where its VXLAN
	// packets go. A peer whose Node is this Manager's UnderlayAddr is a
	// local task and is skipped, so the caller may pass all the
	// network's tasks.
	Node net.IP
}

// SetPeers sets the remote tasks of overlay network netID, replacing
// the set given before: entries of tasks no longer listed are removed.
// The set is kept, and applied whenever the network's bridge is made on
// this node; for a network without a bridge here, SetPeers changes
// nothing on the host. A nil or empty list removes all peers.
//
// A peer listed by address twice, or two peers with one MAC, are
// refused. A peer whose address is the network's gateway or one of its
// service VIPs (which every node's bridge has), or outside its subnets,
// is left out with a warning: installing it would send the local tasks'
// traffic for the gateway to another node.
func (m *Manager) SetPeers(netID string, peers []Peer) error {
	if netID == "" {
		return fmt.Errorf("%w: peers without a network id", ErrInvalid)
	}
	if m.cfg.UnderlayAddr == nil {
		return fmt.Errorf("set peers of network %s: %w", netID, ErrNoUnderlay)
	}
	list, err := normalizePeers(m.cfg.UnderlayAddr, peers)
	if err != nil {
		return fmt.Errorf("set peers of network %s: %w", netID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.bridges[netID]
	if ok && b.vni == 0 {
		return fmt.Errorf("set peers of network %s: %w: not an overlay network", netID, ErrInvalid)
	}
	if m.peers == nil {
		m.peers = map[string][]Peer{}
	}
	m.peers[netID] = list
	if !ok {
		return nil
	}
	if err := m.applyPeers(b); err != nil {
		return fmt.Errorf("set peers of network %s: %w", netID, err)
	}
	return nil
}

// normalizePeers checks peers and returns them with their MACs filled
// in, sorted by address, without those on the node at underlay.
func normalizePeers(underlay net.IP, peers []Peer) ([]Peer, error) {
	out := make([]Peer, 0, len(peers))
	byIP := map[string]bool{}
	byMAC := map[string]string{}
	for _, p := range peers {
		ip := p.IP.To4()
		if ip == nil {
			return nil, fmt.Errorf("%w: peer address %v: want IPv4", ErrInvalid, p.IP)
		}
		mac := slices.Clone(p.MAC)
		if mac == nil {
			mac = macFor(ip)
		}
		if len(mac) != 6 || mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)) {
			return nil, fmt.Errorf("%w: peer %s: MAC %v is not a unicast Ethernet address", ErrInvalid, ip, p.MAC)
		}
		node := p.Node.To4()
		if node == nil {
			node = p.Node.To16()
		}
		if node == nil || (node.To4() == nil) != (underlay.To4() == nil) {
			return nil, fmt.Errorf("%w: peer %s: node address %v is not of the underlay's family (%s)", ErrInvalid, ip, p.Node, underlay)
		}
		if byIP[ip.String()] {
			return nil, fmt.Errorf("%w: peer %s listed twice", ErrInvalid, ip)
		}
		byIP[ip.String()] = true
		if other, dup := byMAC[mac.String()]; dup {
			return nil, fmt.Errorf("%w: peers %s and %s have the same MAC %s", ErrInvalid, other, ip, mac)
		}
		byMAC[mac.String()] = ip.String()
		if node.Equal(underlay) {
			continue
		}
		out = append(out, Peer{IP: ip, MAC: mac, Node: node})
	}
	slices.SortFunc(out, func(a, b Peer) int { return bytes.Compare(a.IP, b.IP) })
	return out, nil
}

// IsOverlay says whether n spans nodes (an overlay network) rather than
// being node-local.
func IsOverlay(n *typesv1.Network) bool {
	vni, err := overlayVNI(n)
	return err == nil && vni != 0
}
