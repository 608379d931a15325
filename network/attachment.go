package network

import (
	"fmt"
	"net"
	"strconv"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// defaultMTU is Docker's default for bridge and overlay networks.
const defaultMTU = 1500

// mtuOption is Docker's driver option for a network's MTU; compose files
// set it under `driver_opts`.
const mtuOption = "com.docker.network.driver.mtu"

// attachment is one NetworkAttachment checked and parsed, so that Attach
// fails on a bad attachment before it changes anything on the host.
type attachment struct {
	netID string
	// gateways are the bridge's addresses: each gateway IP with its
	// subnet's mask, one per IPv4 IPAM config.
	gateways []*net.IPNet
	addr     *net.IPNet // the task's address, with its subnet's mask
	gw       net.IP     // the gateway of addr's subnet
	mtu      int
	// vni is the VNI of an overlay network (see overlayVNI), 0 for a
	// node-local one.
	vni uint32
}

// parseAttachment checks an attachment. Only IPv4 is wired up: IPv6
// subnets and addresses are skipped, since the NAT and isolation rules
// are IPv4-only for now.
func parseAttachment(a *typesv1.NetworkAttachment) (attachment, error) {
	n := a.GetNetwork()
	if n.GetId() == "" {
		return attachment{}, fmt.Errorf("%w: attachment without a network id", ErrInvalid)
	}
	at := attachment{netID: n.GetId(), mtu: defaultMTU}
	vni, err := overlayVNI(n)
	if err != nil {
		return attachment{}, err
	}
	if vni != 0 {
		at.vni, at.mtu = vni, defaultMTU-vxlanOverhead
	}
	// The allocator writes the subnets it chose into Network.ipam; the
	// spec's are what the user asked for and serve when nothing was
	// allocated (a network created with explicit subnets).
	configs := n.GetIpam().GetConfigs()
	if len(configs) == 0 {
		configs = n.GetSpec().GetIpam().GetConfigs()
	}
	var subnets []*net.IPNet
	for _, c := range configs {
		_, sub, err := net.ParseCIDR(c.GetSubnet())
		if err != nil {
			return attachment{}, fmt.Errorf("%w: network %s: subnet %q: %v", ErrInvalid, at.netID, c.GetSubnet(), err)
		}
		if sub.IP.To4() == nil {
			continue
		}
		sub.IP = sub.IP.To4()
		ones, bits := sub.Mask.Size()
		if bits-ones < 2 {
			return attachment{}, fmt.Errorf("%w: network %s: subnet %s has no room for a gateway and a task", ErrInvalid, at.netID, sub)
		}
		var gw net.IP
		if c.GetGateway() != "" {
			gw = net.ParseIP(c.GetGateway()).To4()
			if gw == nil || !sub.Contains(gw) {
				return attachment{}, fmt.Errorf("%w: network %s: gateway %q is not an address in %s", ErrInvalid, at.netID, c.GetGateway(), sub)
			}
		} else {
			// Docker's default: the subnet's first address.
			gw = nextIP(sub.IP)
		}
		subnets = append(subnets, sub)
		at.gateways = append(at.gateways, &net.IPNet{IP: gw, Mask: sub.Mask})
	}
	if len(subnets) == 0 {
		return attachment{}, fmt.Errorf("%w: network %s has no IPv4 subnet", ErrInvalid, at.netID)
	}
	for _, s := range a.GetAddresses() {
		ip, ipn, err := net.ParseCIDR(s)
		if err != nil {
			if ip = net.ParseIP(s); ip == nil {
				return attachment{}, fmt.Errorf("%w: network %s: address %q", ErrInvalid, at.netID, s)
			}
		}
		if ip.To4() == nil {
			continue
		}
		ip = ip.To4()
		i := containing(subnets, ip)
		if i < 0 {
			return attachment{}, fmt.Errorf("%w: network %s: address %s is outside its subnets", ErrInvalid, at.netID, s)
		}
		if ipn != nil && ipn.String() != subnets[i].String() {
			return attachment{}, fmt.Errorf("%w: network %s: address %s does not match subnet %s", ErrInvalid, at.netID, s, subnets[i])
		}
		if ip.Equal(at.gateways[i].IP) || ip.Equal(subnets[i].IP) {
			return attachment{}, fmt.Errorf("%w: network %s: address %s is the subnet's gateway or network address", ErrInvalid, at.netID, s)
		}
		at.addr = &net.IPNet{IP: ip, Mask: subnets[i].Mask}
		at.gw = at.gateways[i].IP
		break
	}
	if at.addr == nil {
		return attachment{}, fmt.Errorf("%w: network %s: no IPv4 address allocated for the task", ErrInvalid, at.netID)
	}
	if v, ok := n.GetSpec().GetDriverOpts()[mtuOption]; ok {
		mtu, err := strconv.Atoi(v)
		if err != nil || mtu < 68 || mtu > 65535 {
			return attachment{}, fmt.Errorf("%w: network %s: %s=%q is not an MTU", ErrInvalid, at.netID, mtuOption, v)
		}
		at.mtu = mtu
	}
	return at, nil
}

// parseAttachments parses all of a task's attachments; a network may
// appear only once, as in Docker.
func parseAttachments(atts []*typesv1.NetworkAttachment) ([]attachment, error) {
	out := make([]attachment, 0, len(atts))
	seen := map[string]bool{}
	for _, a := range atts {
		at, err := parseAttachment(a)
		if err != nil {
			return nil, err
		}
		if seen[at.netID] {
			return nil, fmt.Errorf("%w: network %s attached twice", ErrInvalid, at.netID)
		}
		seen[at.netID] = true
		out = append(out, at)
	}
	return out, nil
}

func containing(subnets []*net.IPNet, ip net.IP) int {
	for i, s := range subnets {
		if s.Contains(ip) {
			return i
		}
	}
	return -1
}

func nextIP(ip net.IP) net.IP {
	out := make(net.IP, len(ip))
	copy(out, ip)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			break
		}
	}
	return out
}

// overlaps reports whether two subnets share an address.
func overlaps(a, b *net.IPNet) bool { return a.Contains(b.IP) || b.Contains(a.IP) }

// subnetOf is the network part of a gateway address.
func subnetOf(g *net.IPNet) *net.IPNet { return &net.IPNet{IP: g.IP.Mask(g.Mask), Mask: g.Mask} }

// macFor derives a task interface's MAC from its IPv4 address, as Docker
// does (02:42 and the four address bytes): an address handed to a new
// task then comes with the same MAC, so neighbours' ARP caches holding
// the old task's entry stay right.
func macFor(ip net.IP) net.HardwareAddr {
	ip4 := ip.To4()
	return net.HardwareAddr{0x02, 0x42, ip4[0], ip4[1], ip4[2], ip4[3]}
}
