package dnat

import (
	"fmt"
	"net/netip"
	"slices"

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

// Packet-mark bits that ask postrouting to masquerade a new connection;
// doc.go says why a mark. masqMark always; meshMark if the connection
// was sent to another node (daddr in the nodes set); vipMark if it was
// sent to a local task (daddr in the vip_local set). Postrouting clears
// all three.
const (
	masqMark uint32 = 0x2000_0000
	meshMark uint32 = 0x1000_0000
	vipMark  uint32 = 0x0800_0000
	ourMarks        = masqMark | meshMark | vipMark
)

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

// The table's other sets, made only when a frontend needs them.
const (
	// mapEndpoints is the backends map of ports with remote nodes:
	// index → address . port, as a remote node is reached on the
	// published port and a local task on the target port.
	mapEndpoints = "endpoints"
	// setNodes holds the nodes of the cluster: SetNodes' list and every
	// port's remote nodes. A published-port connection from one of them
	// is a second hop; one sent to one of them is masqueraded.
	setNodes = "nodes"
	// setVIPLocal holds the local tasks of the VIPs that have remote
	// tasks: a connection to such a VIP is masqueraded if it was sent to
	// one of them.
	setVIPLocal = "vip_local"
)

// endpointType is the value of mapEndpoints. Each part of a
// concatenation takes a whole 32-bit register: the lookup writes the
// address to NFT_REG32_00 and the port, in network byte order followed
// by two bytes of padding, to NFT_REG32_01; NFT_REG_1, the 16-byte
// register the numgen key is read from, starts at NFT_REG32_00. nft
// itself compiles `dnat ip to numgen … map { … : a . p }` this way.
var endpointType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)

// elemsPerMessage bounds the elements sent in one message: the kernel
// reads the element list from one attribute, whose length is 16 bits.
const elemsPerMessage = 512

// ruleset queues into one batch of c the replacement of the table by
// the rules of fe.
type ruleset struct {
	c         *nftables.Conn
	t         *nftables.Table
	backends  *nftables.Set
	elems     []nftables.SetElement // of backends, index i at i
	endpoints *nftables.Set         // nil unless a port has remote nodes, and so are nodes and epElems
	epElems   []nftables.SetElement // of endpoints, index i at i
	nodes     *nftables.Set
	vipLocal  *nftables.Set // nil unless a VIP has remote tasks
}

// endpoint is where a published-port connection may be sent.
type endpoint struct {
	addr netip.Addr
	port uint16
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

	var nodes, vipLocal []netip.Addr
	if fe.mesh() {
		r.endpoints = &nftables.Set{
			Table: r.t, ID: 2, Name: mapEndpoints, IsMap: true,
			KeyType: nftables.TypeInteger, KeyByteOrder: binaryutil.NativeEndian, DataType: endpointType,
		}
		r.nodes = &nftables.Set{Table: r.t, ID: 3, Name: setNodes, KeyType: nftables.TypeIPAddr}
		nodes = slices.Clone(fe.nodes)
		for _, p := range fe.ports {
			for _, n := range p.Remote {
				nodes = append(nodes, n.Node)
			}
		}
	}
	if fe.remoteVIPs() {
		r.vipLocal = &nftables.Set{Table: r.t, ID: 4, Name: setVIPLocal, KeyType: nftables.TypeIPAddr}
		for _, v := range fe.vips {
			if len(v.Remote) > 0 {
				vipLocal = append(vipLocal, v.Backends...)
			}
		}
	}
	for _, s := range []*nftables.Set{r.endpoints, r.nodes, r.vipLocal} {
		if s == nil {
			continue
		}
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
	}

	for _, v := range fe.vips {
		// A VIP's remote tasks must see the caller's own address: if it
		// has any, a connection is masqueraded only if it goes to a local
		// task. The host's connections go to local tasks only, as a
		// remote task cannot answer the host (doc.go). Without remote
		// tasks, both rules draw from the same range of the map.
		var local []expr.Any
		if len(v.Backends) > 0 {
			local = r.dnatTo(v.Backends, 0)
		}
		mark, all := masqMark, local
		if len(v.Remote) > 0 {
			mark, all = vipMark, r.dnatTo(slices.Concat(v.Backends, v.Remote), 0)
		}
		r.add(pre, fmt.Sprintf("vip %s %s from %s", v.Name, v.Addr, v.Source), concat(
			daddrIs(v.Addr), addrIn(12, expr.CmpOpEq, v.Source), markOr(mark), all))
		if local != nil {
			r.add(out, fmt.Sprintf("vip %s %s from host", v.Name, v.Addr), concat(
				daddrIs(v.Addr), markOr(masqMark), local))
		}
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
		if len(p.Remote) == 0 {
			r.add(ports, name, concat(l4port(proto, p.Port), r.dnatTo(p.Backends, p.Target)))
			continue
		}
		// A second hop goes to a local task or nowhere: accept ends the
		// table's NAT chain, and the host has the packet.
		hop := verdict(&expr.Verdict{Kind: expr.VerdictAccept})
		if len(p.Backends) > 0 {
			hop = r.dnatTo(p.Backends, p.Target)
		}
		r.add(ports, name+" from a node", concat(
			addrInSet(12, r.nodes), foreignSaddr(), l4port(proto, p.Port), hop))
		eps := make([]endpoint, 0, len(p.Backends)+len(p.Remote))
		for _, b := range p.Backends {
			eps = append(eps, endpoint{b, p.Target})
		}
		for _, n := range p.Remote {
			for range n.Weight {
				eps = append(eps, endpoint{n.Node, p.Port})
			}
		}
		r.add(ports, name, concat(l4port(proto, p.Port), markOr(meshMark), r.dnatToEndpoints(eps)))
	}
	masq := []expr.Any{&expr.Masq{}}
	r.add(post, "masquerade marked", concat(markHas(masqMark), markClear(ourMarks), masq))
	if r.nodes != nil {
		r.add(post, "masquerade to another node", concat(
			markHas(meshMark), addrInSet(16, r.nodes), markClear(ourMarks), masq))
	}
	if r.vipLocal != nil {
		r.add(post, "masquerade vip to a local task", concat(
			markHas(vipMark), addrInSet(16, r.vipLocal), markClear(ourMarks), masq))
	}
	if r.nodes != nil || r.vipLocal != nil {
		r.add(post, "clear marks", concat(markHas(meshMark|vipMark), markClear(ourMarks)))
	}

	if err := r.addElements(r.backends, r.elems); err != nil {
		return err
	}
	if r.endpoints != nil {
		if err := r.addElements(r.endpoints, r.epElems); err != nil {
			return err
		}
		if err := r.addElements(r.nodes, addrElems(nodes)); err != nil {
			return err
		}
	}
	if r.vipLocal != nil {
		if err := r.addElements(r.vipLocal, addrElems(vipLocal)); err != nil {
			return err
		}
	}
	return nil
}

// addElements queues elems into s, elemsPerMessage at a time.
func (r *ruleset) addElements(s *nftables.Set, elems []nftables.SetElement) error {
	for len(elems) > 0 {
		n := min(len(elems), elemsPerMessage)
		if err := r.c.SetAddElements(s, elems[:n]); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		elems = elems[n:]
	}
	return nil
}

// addrElems returns the elements of a set of IPv4 addresses, each once.
func addrElems(addrs []netip.Addr) []nftables.SetElement {
	addrs = slices.Clone(addrs)
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	out := make([]nftables.SetElement, len(addrs))
	for i, a := range addrs {
		out[i] = nftables.SetElement{Key: a.AsSlice()}
	}
	return out
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

// dnatToEndpoints returns the DNAT to one of eps (not empty), address
// and port. One endpoint is written as immediates; more get a range of
// the endpoints map, an endpoint given k times taking k turns.
func (r *ruleset) dnatToEndpoints(eps []endpoint) []expr.Any {
	if len(eps) == 1 {
		return concat([]expr.Any{&expr.Immediate{Register: 1, Data: eps[0].addr.AsSlice()}}, dnat(eps[0].port))
	}
	off := len(r.epElems)
	for i, e := range eps {
		a := e.addr.As4()
		r.epElems = append(r.epElems, nftables.SetElement{
			Key: binaryutil.NativeEndian.PutUint32(uint32(off + i)),
			Val: []byte{a[0], a[1], a[2], a[3], byte(e.port >> 8), byte(e.port), 0, 0}, // see endpointType
		})
	}
	return concat(pickFrom(r.endpoints, uint32(len(eps)), uint32(off)), []expr.Any{&expr.NAT{
		Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: unix.NFT_REG_1, RegProtoMin: unix.NFT_REG32_01,
	}})
}

// add queues a rule of ch.
func (r *ruleset) add(ch *nftables.Chain, comment string, exprs []expr.Any) {
	r.c.AddRule(&nftables.Rule{
		Table: r.t, Chain: ch, Exprs: exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
	})
}
