package dnat

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Expression helpers, in the style of package network's nft.go. Registers
// hold the mark, numgen's result and fib's address type in host byte
// order, addresses and ports in network byte order.

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// daddrIs matches an IPv4 destination address.
func daddrIs(a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// addrIn matches the IPv4 source (offset 12) or destination (offset 16)
// address against p, with op CmpOpEq (inside) or CmpOpNeq (outside).
func addrIn(offset uint32, op expr.CmpOp, p netip.Prefix) []expr.Any {
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}
	if p.Bits() == 32 {
		return []expr.Any{load, &expr.Cmp{Op: op, Register: 1, Data: p.Addr().AsSlice()}}
	}
	mask := binaryutil.BigEndian.PutUint32(^uint32(0) << (32 - p.Bits()))
	if p.Bits() == 0 {
		mask = make([]byte, 4)
	}
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// addrInSet matches the IPv4 source (offset 12) or destination (offset
// 16) address against the addresses of set s (`ip saddr @s`).
func addrInSet(offset uint32, s *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

// foreignSaddr matches a source that is not an address of this host
// (`fib saddr type != local`): in output, the host's own packets never
// match.
func foreignSaddr() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

// localDaddr matches a destination that is an address of this host
// (`fib daddr type local`) outside 127.0.0.0/8.
func localDaddr() []expr.Any {
	return concat(
		addrIn(16, expr.CmpOpNeq, netip.MustParsePrefix("127.0.0.0/8")),
		[]expr.Any{
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		})
}

// l4port matches a protocol (IPPROTO_TCP or IPPROTO_UDP) and its
// destination port (`meta l4proto tcp th dport 80`).
func l4port(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// ifnamePrefix matches names starting with p (nft's `"p*"`): the
// comparison covers only len(p) bytes.
func ifnamePrefix(key expr.MetaKey, p string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p)},
	}
}

// markOr sets the bits of m in the packet mark and keeps the others
// (`meta mark set meta mark | m`).
func markOr(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^m), Xor: binaryutil.NativeEndian.PutUint32(m)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// markHas matches packets whose mark has a bit of m set
// (`meta mark & m != 0`).
func markHas(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(m), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// markClear clears the bits of m in the packet mark
// (`meta mark set meta mark & ^m`).
func markClear(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^m), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// pickFrom loads into register 1 the value of m at the key `numgen inc
// mod n offset off`: successive evaluations take off, off+1, …, off+n-1
// and start again. numgen writes its key in host byte order. A value of
// more than 4 bytes continues into the registers after NFT_REG32_00
// (endpointType).
func pickFrom(m *nftables.Set, n, off uint32) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: n, Type: unix.NFT_NG_INCREMENTAL, Offset: off},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: m.Name, SetID: m.ID},
	}
}

// dnat rewrites the destination address to register 1 and, if port is
// not 0, the destination port to port.
func dnat(port uint16) []expr.Any {
	nat := &expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1}
	if port == 0 {
		return []expr.Any{nat}
	}
	nat.RegProtoMin = 2
	return []expr.Any{&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)}, nat}
}

func verdict(v *expr.Verdict) []expr.Any { return []expr.Any{v} }
