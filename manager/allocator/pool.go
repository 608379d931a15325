package allocator

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// Owners of addresses, as recorded in a pool. The owner is what makes
// Release safe: a terminal task keeps its old address in its record, and
// releasing it again after the address went to another task must not free
// the new holder's address.
const (
	ownerGateway = "gateway"
	taskPrefix   = "task:"
	vipPrefix    = "vip:"
)

func taskOwner(id string) string { return taskPrefix + id }
func vipOwner(id string) string  { return vipPrefix + id }

// pool is one IPAM config of a network: an IPv4 subnet, its gateway, and
// the part of it (ip_range) that dynamic allocation draws from. Used
// addresses are a bitmap over the whole subnet, so that explicitly
// requested addresses outside ip_range and the gateway fit in it too.
type pool struct {
	prefix  netip.Prefix
	gateway netip.Addr // invalid when the stored config names none
	base    uint32     // the subnet's network address
	size    uint32     // addresses in the subnet, network and broadcast included
	lo, hi  uint32     // offsets dynamic allocation may use, inclusive
	used    []uint64
	owners  map[uint32]string
}

func addrToUint(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func uintToAddr(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// newPool makes a pool of subnet, allocating dynamically from rng (the
// whole subnet when rng is not valid). The caller has checked that subnet
// is a masked IPv4 prefix of /8 to /30 and rng lies inside it.
func newPool(subnet, rng netip.Prefix, gateway netip.Addr) *pool {
	size := uint32(1) << (32 - subnet.Bits())
	p := &pool{
		prefix:  subnet,
		gateway: gateway,
		base:    addrToUint(subnet.Addr()),
		size:    size,
		// The network and broadcast addresses are never handed out,
		// whatever ip_range says: the kernel treats them specially.
		lo:     1,
		hi:     size - 2,
		used:   make([]uint64, (size+63)/64),
		owners: map[uint32]string{},
	}
	if rng.IsValid() {
		start := addrToUint(rng.Addr()) - p.base
		end := start + uint32(1)<<(32-rng.Bits()) - 1
		p.lo, p.hi = max(p.lo, start), min(p.hi, end)
	}
	if gateway.IsValid() {
		p.set(p.offset(gateway), ownerGateway)
	}
	return p
}

func (p *pool) offset(a netip.Addr) uint32 { return addrToUint(a) - p.base }
func (p *pool) addr(off uint32) netip.Addr { return uintToAddr(p.base + off) }

// cidr is how addresses are stored in objects, as Docker does:
// "10.0.1.5/24", so that an agent knows the prefix without the network.
func (p *pool) cidr(a netip.Addr) string { return netip.PrefixFrom(a, p.prefix.Bits()).String() }

// hostAddress reports whether a may be given to a task or a VIP at all.
func (p *pool) hostAddress(a netip.Addr) bool {
	if !p.prefix.Contains(a) {
		return false
	}
	off := p.offset(a)
	return off != 0 && off != p.size-1
}

func (p *pool) owner(a netip.Addr) string { return p.owners[p.offset(a)] }

func (p *pool) set(off uint32, who string) {
	p.used[off/64] |= 1 << (off % 64)
	p.owners[off] = who
}

// claim marks a as used by who; the caller has checked it is free.
func (p *pool) claim(a netip.Addr, who string) { p.set(p.offset(a), who) }

// free returns a to the pool if who holds it, and only then.
func (p *pool) free(a netip.Addr, who string) {
	off := p.offset(a)
	if p.owners[off] != who {
		return
	}
	delete(p.owners, off)
	p.used[off/64] &^= 1 << (off % 64)
}

// lowestFree is the lowest unused address of the dynamic range: always the
// lowest, so that allocation is deterministic and a test (or a person
// reading `inspect`) can predict it.
func (p *pool) lowestFree() (netip.Addr, bool) {
	if p.lo > p.hi {
		return netip.Addr{}, false
	}
	first, last := p.lo/64, p.hi/64
	for w := first; w <= last; w++ {
		free := ^p.used[w]
		if w == first {
			free &= ^uint64(0) << (p.lo % 64)
		}
		if w == last {
			free &= ^uint64(0) >> (63 - p.hi%64)
		}
		if free != 0 {
			return p.addr(w*64 + uint32(bits.TrailingZeros64(free))), true
		}
	}
	return netip.Addr{}, false
}
