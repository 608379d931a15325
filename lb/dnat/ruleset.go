package dnat

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Chains of the table, in the order Rules lists them.
const (
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPorts       = "ports"
	chainPostrouting = "postrouting"
)

var chainOrder = []string{chainPrerouting, chainOutput, chainPorts, chainPostrouting}

// masqMark is the packet-mark bit that asks postrouting to masquerade a
// new connection; doc.go says why a mark.
const masqMark uint32 = 0x2000_0000

func tableRef(name string) *nftables.Table {
	return &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
}

// mapBackends is the table's one map, from which the DNAT rules of
// frontends with several backends pick: index → address. Each such
// frontend owns a range of indexes, [offset, offset+n), and its rule
// draws from it with `numgen inc mod n offset <offset>`. One map rather
// than one per frontend: each set costs two messages in the batch, each
// read back as an acknowledgement; with 150 services the batch shrinks
// from about 1200 messages to 470, and BenchmarkSync from 75 to 64 ms.
const mapBackends = "backends"

// elemsPerMessage bounds the elements sent in one message: the kernel
// reads the element list from one attribute, whose length is 16 bits.
const elemsPerMessage = 512

// ruleset queues into one batch of c the replacement of the table by
// the rules of fe.
type ruleset struct {
	c        *nftables.Conn
	t        *nftables.Table
	backends *nftables.Set
	elems    []nftables.SetElement // of backends, index i at i
}

func queueTable(c *nftables.Conn, table, bridgePrefix string, fe frontends) error {
	// Add, delete, add: the delete needs the table to exist, and the
	// first add makes sure it does, within the same transaction.
	c.AddTable(tableRef(table))
	c.DelTable(tableRef(table))
	r := &ruleset{c: c, t: c.AddTable(tableRef(table))}
	accept := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{
		Name: chainPrerouting, Table: r.t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	out := c.AddChain(&nftables.Chain{
		Name: chainOutput, Table: r.t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: &accept,
	})
	ports := c.AddChain(&nftables.Chain{Name: chainPorts, Table: r.t})
	post := c.AddChain(&nftables.Chain{
		Name: chainPostrouting, Table: r.t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	// The map's ID is the batch's own: the library's automatic IDs come
	// from a global counter. Its elements follow the rules, in the same
	// transaction.
	r.backends = &nftables.Set{
		Table: r.t, ID: 1, Name: mapBackends, IsMap: true,
		KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeIPAddr,
	}
	if err := c.AddSet(r.backends, nil); err != nil {
		return fmt.Errorf("map %s: %w", mapBackends, err)
	}

	for _, v := range fe.vips {
		to := r.dnatTo(v.Backends, 0)
		r.add(pre, fmt.Sprintf("vip %s %s from %s", v.Name, v.Addr, v.Source), concat(
			daddrIs(v.Addr), addrIn(12, expr.CmpOpEq, v.Source), markOr(masqMark), to))
		r.add(out, fmt.Sprintf("vip %s %s from host", v.Name, v.Addr), concat(
			daddrIs(v.Addr), markOr(masqMark), to))
	}
	if len(fe.ports) > 0 {
		jump := concat(localDaddr(), verdict(&expr.Verdict{Kind: expr.VerdictJump, Chain: chainPorts}))
		r.add(pre, "published ports", jump)
		r.add(out, "published ports", jump)
	}
	for _, p := range fe.ports {
		proto := byte(unix.IPPROTO_TCP)
		if p.Proto == "udp" {
			proto = unix.IPPROTO_UDP
		}
		name := fmt.Sprintf("port %s %d/%s", p.Name, p.Port, p.Proto)
		// Only prerouting has an input interface: in output the
		// hairpin rule never matches.
		r.add(ports, name+" hairpin", concat(
			ifnamePrefix(expr.MetaKeyIIFNAME, bridgePrefix), l4port(proto, p.Port), markOr(masqMark)))
		r.add(ports, name, concat(l4port(proto, p.Port), r.dnatTo(p.Backends, p.Target)))
	}
	r.add(post, "masquerade marked", concat(markHas(masqMark), markClear(masqMark), []expr.Any{&expr.Masq{}}))

	for elems := r.elems; len(elems) > 0; {
		n := min(len(elems), elemsPerMessage)
		if err := c.SetAddElements(r.backends, elems[:n]); err != nil {
			return fmt.Errorf("map %s: %w", mapBackends, err)
		}
		elems = elems[n:]
	}
	return nil
}

// dnatTo returns the DNAT to one of backends (not empty) and, if port
// is not 0, to that port. One backend is written as an immediate; more
// get a range of the backends map, from which successive connections
// take them in turn.
func (r *ruleset) dnatTo(backends []netip.Addr, port uint16) []expr.Any {
	var pick []expr.Any
	if len(backends) == 1 {
		pick = []expr.Any{&expr.Immediate{Register: 1, Data: backends[0].AsSlice()}}
	} else {
		off := len(r.elems)
		for i, b := range backends {
			r.elems = append(r.elems, nftables.SetElement{
				Key: binaryutil.NativeEndian.PutUint32(uint32(off + i)), Val: b.AsSlice()})
		}
		pick = pickFrom(r.backends, uint32(len(backends)), uint32(off))
	}
	return concat(pick, dnat(port))
}

// add queues a rule of ch.
func (r *ruleset) add(ch *nftables.Chain, comment string, exprs []expr.Any) {
	r.c.AddRule(&nftables.Rule{
		Table: r.t, Chain: ch, Exprs: exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
	})
}
