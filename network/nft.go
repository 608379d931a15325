package network

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Chains of the manager's table.
const (
	chainPostrouting = "postrouting"
	chainForward     = "forward"
)

// firewall keeps the manager's one nftables table: outbound NAT and
// forwarding rules per bridge. Every rule carries its bridge's name as
// its comment, which is how a bridge's rules are found and removed, also
// by a manager that did not add them.
//
// The table is of the inet family so that IPv6 rules can join it later;
// each rule matches IPv4 explicitly.
type firewall struct {
	table  string
	prefix string // link name prefix, for the wildcard in the isolation rule
}

func (f *firewall) tableRef() *nftables.Table {
	return &nftables.Table{Name: f.table, Family: nftables.TableFamilyINet}
}

// chains declares the table and its base chains. Both chains accept by
// default: the table adds to the host's firewall and does not take its
// policy over.
func (f *firewall) chains(c *nftables.Conn) (post, fwd *nftables.Chain) {
	t := c.AddTable(f.tableRef())
	accept := nftables.ChainPolicyAccept
	post = c.AddChain(&nftables.Chain{
		Name: chainPostrouting, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	fwd = c.AddChain(&nftables.Chain{
		Name: chainForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept,
	})
	return post, fwd
}

// addBridge installs (or reinstalls) the rules of one bridge:
//
//	postrouting: ip saddr <subnet> oifname != <br> masquerade     (per subnet)
//	forward:     oifname <br> ct status dnat accept
//	             iifname <br> oifname "<prefix>-br-*" oifname != <br> drop
//	             iifname <br> accept
//	             oifname <br> ct state established,related accept
//	             oifname <br> drop
//
// The isolation rule keeps networks apart; the last keeps a task from
// being reached by routing from outside, as in Docker. The exception is
// the first rule: a connection the kernel load balancer (lb/dnat) sent to
// a task, through a published port or a service VIP, whose rules decide
// who may reach what.
func (f *firewall) addBridge(br string, subnets []*net.IPNet) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	post, fwd := f.chains(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", f.table, err)
	}
	// Rules from an earlier run go first, so that adding is idempotent.
	if err := f.queueDelete(c, br, post, fwd); err != nil {
		return err
	}
	comment := userdata.AppendString(nil, userdata.TypeComment, br)
	add := func(ch *nftables.Chain, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: exprs, UserData: comment})
	}
	for _, s := range subnets {
		add(post, concat(ipv4(), saddrIn(s), ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br), []expr.Any{&expr.Masq{}})...)
	}
	add(fwd, concat(ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), ctDNAT(), verdict(expr.VerdictAccept))...)
	add(fwd, concat(
		ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br),
		ifnamePrefix(expr.MetaKeyOIFNAME, bridgePrefix(f.prefix)),
		ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br),
		verdict(expr.VerdictDrop))...)
	add(fwd, concat(ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictAccept))...)
	add(fwd, concat(ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), ctEstablished(), verdict(expr.VerdictAccept))...)
	add(fwd, concat(ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br), verdict(expr.VerdictDrop))...)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables rules of %s: %w", br, err)
	}
	return nil
}

// removeBridge deletes the rules of one bridge; a missing table means
// there are none.
func (f *firewall) removeBridge(br string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if _, err := c.ListTableOfFamily(f.table, nftables.TableFamilyINet); err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	t := f.tableRef()
	post := &nftables.Chain{Name: chainPostrouting, Table: t}
	fwd := &nftables.Chain{Name: chainForward, Table: t}
	if err := f.queueDelete(c, br, post, fwd); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete nftables rules of %s: %w", br, err)
	}
	return nil
}

// queueDelete queues the deletion of every rule of the given chains whose
// comment is br.
func (f *firewall) queueDelete(c *nftables.Conn, br string, chains ...*nftables.Chain) error {
	for _, ch := range chains {
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return fmt.Errorf("list nftables chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			if ruleComment(r) == br {
				if err := c.DelRule(r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// rules lists the comments of the table's rules, one entry per rule; for
// tests and diagnostics.
func (f *firewall) rules() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	t := f.tableRef()
	var out []string
	for _, name := range []string{chainPostrouting, chainForward} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return nil, err
		}
		for _, r := range rules {
			out = append(out, ruleComment(r))
		}
	}
	return out, nil
}

// deleteTable drops the whole table; a missing one is not an error.
func (f *firewall) deleteTable() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if _, err := c.ListTableOfFamily(f.table, nftables.TableFamilyINet); err != nil {
		if isNotExist(err) {
			return nil
		}
		return err
	}
	c.DelTable(f.tableRef())
	if err := c.Flush(); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete nftables table %s: %w", f.table, err)
	}
	return nil
}

// tableExists reports whether the table is there; for tests.
func (f *firewall) tableExists() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	if _, err := c.ListTableOfFamily(f.table, nftables.TableFamilyINet); err != nil {
		if isNotExist(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// isNotExist recognises the kernel's ENOENT: a missing table or chain.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ipv4 matches IPv4 packets, which an inet table must check before it
// reads IPv4 header fields.
func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// saddrIn matches an IPv4 source address inside s.
func saddrIn(s *net.IPNet) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(net.IP(s.Mask).To4()), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(s.IP.To4())},
	}
}

// ifname compares an interface name exactly: nft pads names to IFNAMSIZ
// with NULs, and so does this.
func ifname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
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

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

// ctDNAT matches connections whose destination was rewritten by DNAT.
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// ipsDstNAT is the kernel's IPS_DST_NAT conntrack status bit.
const ipsDstNAT = 1 << 5
