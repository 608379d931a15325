package allocator

import (
	"maps"
	"net/netip"
	"slices"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Automatic subnets are carved from Docker's default address pool, in
// /24s, so that addresses look the way swarm users expect them to.
var (
	defaultPool     = netip.MustParsePrefix("10.0.0.0/8")
	defaultPoolBits = 24
)

// Subnets must leave room for a gateway and at least one address, and not
// be so large that their bitmap (2^(32-bits) bits) becomes a burden:
// a /8 costs 2 MiB.
const (
	minSubnetBits = 8
	maxSubnetBits = 30
)

// allocated reports whether n carries an allocation: every IPAM config has
// a subnet.
func allocated(n *typesv1.Network) bool {
	cfgs := n.GetIpam().GetConfigs()
	if len(cfgs) == 0 {
		return false
	}
	for _, c := range cfgs {
		if c.GetSubnet() == "" {
			return false
		}
	}
	return true
}

// addPending records a network that has no allocation yet, and reserves
// its explicit subnets from automatic carving. Malformed ones are ignored
// here; AllocateNetwork reports them.
func (a *Allocator) addPending(n *typesv1.Network) {
	a.pending[n.GetId()] = networkName(n)
	var rs []netip.Prefix
	for _, c := range n.GetSpec().GetIpam().GetConfigs() {
		if p, err := netip.ParsePrefix(c.GetSubnet()); err == nil {
			rs = append(rs, p.Masked())
		}
	}
	if len(rs) > 0 {
		a.reserved[n.GetId()] = rs
	} else {
		delete(a.reserved, n.GetId())
	}
}

// addNetwork registers an allocated network's pools, refusing subnets that
// overlap another network's.
func (a *Allocator) addNetwork(n *typesv1.Network) error {
	nw := &network{name: networkName(n)}
	for _, c := range n.GetIpam().GetConfigs() {
		p, err := a.parseConfig(nw, n.GetId(), c)
		if err != nil {
			return err
		}
		nw.pools = append(nw.pools, p)
	}
	nw.obj = attachmentCopy(n)
	a.networks[n.GetId()] = nw
	delete(a.pending, n.GetId())
	delete(a.reserved, n.GetId())
	return nil
}

// attachmentCopy is the network as tasks carry it in their attachments.
// Meta is left out: it changes with every write of the network, and tasks
// would otherwise look re-allocated whenever it did.
func attachmentCopy(n *typesv1.Network) *typesv1.Network {
	c := proto.CloneOf(n)
	c.Meta = nil
	return c
}

// AllocateNetwork gives n its subnets and gateways, in n.ipam, and reports
// whether it changed n. Each IPAM config of the spec (Docker's
// `ipam.config`) is honoured: its subnet (checked against every other
// network's), gateway (default: the subnet's first host address) and
// ip_range (where task and VIP addresses are drawn from). A network with no
// config gets a /24 of 10.0.0.0/8: the lowest that overlaps neither an
// allocated subnet nor one that a network not yet allocated asks for.
//
// An already allocated network is left as it is, only registered if New
// did not know it.
func (a *Allocator) AllocateNetwork(n *typesv1.Network) (bool, error) {
	if _, ok := a.networks[n.GetId()]; ok {
		return false, nil
	}
	if allocated(n) {
		return false, a.addNetwork(n)
	}
	name := networkName(n)
	cfgs := n.GetSpec().GetIpam().GetConfigs()
	if len(cfgs) == 0 {
		cfgs = []*typesv1.IPAMConfig{{}}
	}
	nw := &network{name: name}
	var out []*typesv1.IPAMConfig
	for _, c := range cfgs {
		c = proto.CloneOf(c)
		if c.GetSubnet() == "" {
			if c.GetRange() != "" || c.GetGateway() != "" {
				return false, errorf(ErrInvalid, "network %s: ip_range and gateway need a subnet", name)
			}
			sub, ok := a.carve(n.GetId(), nw)
			if !ok {
				return false, errorf(ErrExhausted, "network %s: could not find an available subnet in %s", name, defaultPool)
			}
			c.Subnet = sub.String()
		}
		p, err := a.parseConfig(nw, n.GetId(), c)
		if err != nil {
			return false, err
		}
		if p.lo > p.hi {
			return false, errorf(ErrInvalid, "network %s: ip_range %s leaves no usable address", name, c.GetRange())
		}
		// Store the canonical forms, so that what `network inspect` shows
		// is what the allocator works with.
		c.Subnet = p.prefix.String()
		c.Gateway = p.gateway.String()
		nw.pools = append(nw.pools, p)
		out = append(out, c)
	}
	n.Ipam = &typesv1.IPAMOptions{Configs: out}
	nw.obj = attachmentCopy(n)
	a.networks[n.GetId()] = nw
	delete(a.pending, n.GetId())
	delete(a.reserved, n.GetId())
	return true, nil
}

// parseConfig checks one IPAM config of network id against the networks
// already allocated and the pools of nw so far, and makes its pool. A
// missing gateway becomes the subnet's first host address.
func (a *Allocator) parseConfig(nw *network, id string, c *typesv1.IPAMConfig) (*pool, error) {
	name := nw.name
	sub, err := netip.ParsePrefix(c.GetSubnet())
	if err != nil {
		return nil, errorf(ErrInvalid, "network %s: invalid subnet %q", name, c.GetSubnet())
	}
	if !sub.Addr().Unmap().Is4() {
		return nil, errorf(ErrInvalid, "network %s: subnet %s: only IPv4 subnets are supported", name, sub)
	}
	sub = netip.PrefixFrom(sub.Addr().Unmap(), sub.Bits())
	if sub != sub.Masked() {
		return nil, errorf(ErrInvalid, "network %s: invalid subnet %s: it should be %s", name, sub, sub.Masked())
	}
	if sub.Bits() < minSubnetBits || sub.Bits() > maxSubnetBits {
		return nil, errorf(ErrInvalid, "network %s: subnet %s: the prefix length must be between /%d and /%d", name, sub, minSubnetBits, maxSubnetBits)
	}
	for _, p := range nw.pools {
		if p.prefix.Overlaps(sub) {
			return nil, errorf(ErrInUse, "network %s: subnet %s overlaps with its subnet %s", name, sub, p.prefix)
		}
	}
	// Sorted, so that of several overlapping networks the error always
	// names the same one.
	for _, otherID := range slices.Sorted(maps.Keys(a.networks)) {
		if otherID == id {
			continue
		}
		other := a.networks[otherID]
		for _, p := range other.pools {
			if p.prefix.Overlaps(sub) {
				return nil, errorf(ErrInUse, "network %s: subnet %s overlaps with subnet %s of network %s", name, sub, p.prefix, other.name)
			}
		}
	}

	var rng netip.Prefix
	if c.GetRange() != "" {
		rng, err = netip.ParsePrefix(c.GetRange())
		if err != nil {
			return nil, errorf(ErrInvalid, "network %s: invalid ip_range %q", name, c.GetRange())
		}
		rng = netip.PrefixFrom(rng.Addr().Unmap(), rng.Bits())
		if rng != rng.Masked() {
			return nil, errorf(ErrInvalid, "network %s: invalid ip_range %s: it should be %s", name, rng, rng.Masked())
		}
		if !rng.Addr().Is4() || rng.Bits() < sub.Bits() || !sub.Contains(rng.Addr()) {
			return nil, errorf(ErrInvalid, "network %s: ip_range %s is not inside subnet %s", name, rng, sub)
		}
	}

	var gw netip.Addr
	if c.GetGateway() != "" {
		gw, err = parseAddr(c.GetGateway())
		if err != nil {
			return nil, errorf(ErrInvalid, "network %s: invalid gateway %q", name, c.GetGateway())
		}
	} else {
		gw = sub.Addr().Next()
	}
	p := newPool(sub, rng, netip.Addr{})
	if !p.hostAddress(gw) {
		return nil, errorf(ErrInvalid, "network %s: gateway %s is not a host address of subnet %s", name, gw, sub)
	}
	p.gateway = gw
	p.claim(gw, ownerGateway)
	return p, nil
}

// carve finds the lowest /24 of the default pool that overlaps no
// allocated subnet, no subnet that a pending network asks for, and none of
// nw's pools so far.
func (a *Allocator) carve(id string, nw *network) (netip.Prefix, bool) {
	var taken []netip.Prefix
	for _, other := range a.networks {
		for _, p := range other.pools {
			taken = append(taken, p.prefix)
		}
	}
	for otherID, rs := range a.reserved {
		if otherID != id {
			taken = append(taken, rs...)
		}
	}
	for _, p := range nw.pools {
		taken = append(taken, p.prefix)
	}

	step := uint32(1) << (32 - defaultPoolBits)
	start := addrToUint(defaultPool.Addr())
	end := start + uint32(1)<<(32-defaultPool.Bits()) - 1
	for cand := start; cand >= start && cand <= end; {
		c := netip.PrefixFrom(uintToAddr(cand), defaultPoolBits)
		next := cand + step
		clear := true
		for _, t := range taken {
			if !t.Overlaps(c) {
				continue
			}
			clear = false
			// Jump past whichever of the two ends last, so that a large
			// explicit subnet (a /16) is skipped at once.
			tEnd := addrToUint(t.Masked().Addr()) + uint32(1)<<(32-t.Bits()) - 1
			if tEnd >= next {
				next = (tEnd/step + 1) * step
			}
		}
		if clear {
			return c, true
		}
		if next <= cand {
			break // wrapped around the address space
		}
		cand = next
	}
	return netip.Prefix{}, false
}
