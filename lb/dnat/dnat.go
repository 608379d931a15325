package dnat

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultTable        = "shoal-lb"
	DefaultBridgePrefix = "shl-br-" // package network's bridges with its default prefix
)

// Config configures a Manager. Tests give each Manager a table and a
// bridge prefix of their own, so that they run beside a real node.
type Config struct {
	Table        string // nftables table (family ip); DefaultTable if empty
	BridgePrefix string // name prefix of shoal's bridges: what enters from one comes from a task; DefaultBridgePrefix if empty
	Logger       *slog.Logger
}

// Manager keeps the node's load-balancing table. Its methods may be
// called from several goroutines.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	nodes   []netip.Addr // SetNodes' list, sorted
	applied *frontends   // what the table holds; nil before the first Sync and after Close
	writes  int          // batches sent to the kernel; tests check that a no-op Sync sends none
}

// New returns a Manager. It makes sure that bridged IPv4 frames cross
// the inet hooks (br_netfilter, net.bridge.bridge-nf-call-iptables=1),
// which the replies of a VIP's remote tasks need (doc.go); it logs a
// warning if it cannot, and the rest of the package works without. It
// changes nothing else in the kernel until Sync.
func New(cfg Config) (*Manager, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.BridgePrefix == "" {
		cfg.BridgePrefix = DefaultBridgePrefix
	}
	if len(cfg.Table) > 255 {
		return nil, fmt.Errorf("%w: table name of %d bytes, at most 255", ErrInvalid, len(cfg.Table))
	}
	if len(cfg.BridgePrefix) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("%w: bridge prefix %q longer than an interface name", ErrInvalid, cfg.BridgePrefix)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, log: log.With("component", "lb.dnat", "nft.table", cfg.Table)}
	if err := ensureBridgeNetfilter(bridgeSysctlDir, modprobe); err != nil {
		m.log.Warn("bridged traffic does not cross netfilter: replies of remote VIP tasks will not be un-DNATed", "error", err)
	}
	return m, nil
}

// Sync makes the table hold exactly these frontends, replacing it in one
// netlink transaction, so that a packet meets either the old rules or the
// new ones. A frontend without backends, local or remote, gets no rule.
// The rules of ports with remote nodes use the list of the last
// SetNodes. Sync sends nothing when the input, once sorted, equals the
// one it applied last; if the kernel refuses the batch, the old table
// stays and the next Sync tries again.
//
// Sync trusts that nobody else changes the table: after an outside
// `nft flush ruleset`, call Close and Sync again.
func (m *Manager) Sync(vips []VIP, ports []Port) error {
	fe, err := normalize(vips, ports)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.apply(fe.withNodes(m.nodes))
}

// SetNodes sets the addresses of the cluster's nodes (IPv4; this
// node's own may be among them), replacing the list given before. A
// connection to a published port from one of them is a second hop,
// sent by that node's routing mesh: it goes to the port's local
// backends only, or, if there are none, is left to the host. The
// remote nodes of the ports count as nodes without being listed, so
// that two nodes never pass a connection back and forth; the list adds
// nodes that forward here but run no task of any port with remote
// nodes. The host's own connections are never second hops.
//
// The list is kept across Syncs, and also applies to the first Sync
// after it. SetNodes rewrites the table only if it changes a rule: when
// a port has remote nodes.
func (m *Manager) SetNodes(nodes []netip.Addr) error {
	list, err := normalizeNodes(nodes)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes = list
	if m.applied == nil {
		return nil
	}
	return m.apply(m.applied.withNodes(list))
}

// apply makes the table hold fe, unless it already does. m.mu is held.
func (m *Manager) apply(fe frontends) error {
	if m.applied != nil && m.applied.equal(fe) {
		return nil
	}
	c, err := nftables.New(nftables.WithSockOptions(setSockBuf))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := queueTable(c, m.cfg.Table, m.cfg.BridgePrefix, fe); err != nil {
		return fmt.Errorf("nftables table %s: %w", m.cfg.Table, err)
	}
	m.writes++
	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nftables table %s: %w", m.cfg.Table, err)
	}
	m.applied = &fe
	m.log.Debug("load-balancer rules replaced", "vips", len(fe.vips), "ports", len(fe.ports), "nodes", len(fe.nodes))
	return nil
}

// Forget deletes the conntrack entries of connections DNATed to addr: a
// task that left, or a node that no longer runs a port's tasks. These
// are established connections and UDP flows, which conntrack would
// otherwise keep sending there after Sync dropped it. Their next packet
// is a new connection, balanced again (for UDP) or refused (TCP, by the
// new backend or the host).
//
// Only connections whose destination was rewritten to addr are
// deleted: those that were addressed to addr itself, such as a node's
// own traffic with another node or a task's masqueraded connection to
// it, are not the load balancer's and are left alone.
func (m *Manager) Forget(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.Is4() {
		return fmt.Errorf("%w: forget %s: not an IPv4 address", ErrInvalid, addr)
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, dnatedTo(addr))
	if err != nil {
		return fmt.Errorf("delete conntrack entries of %s: %w", addr, err)
	}
	m.log.Debug("conntrack entries deleted", "backend.addr", addr, "count", n)
	return nil
}

// Close deletes the table; a missing table is not an error. A Sync after
// Close makes it again.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied = nil
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := c.ListTableOfFamily(m.cfg.Table, nftables.TableFamilyIPv4); err != nil {
		if isNotExist(err) {
			return nil
		}
		return fmt.Errorf("look up nftables table %s: %w", m.cfg.Table, err)
	}
	c.DelTable(tableRef(m.cfg.Table))
	m.writes++
	if err := c.Flush(); err != nil && !isNotExist(err) {
		return fmt.Errorf("delete nftables table %s: %w", m.cfg.Table, err)
	}
	return nil
}

// Rules lists the comments of the rules of table, chain by chain
// (prerouting, output, ports, postrouting); nothing if the table does not
// exist. For tests and diagnostics.
func Rules(table string) ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t := tableRef(table)
	var out []string
	for _, name := range chainOrder {
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("list nftables chain %s of %s: %w", name, table, err)
		}
		for _, r := range rules {
			s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			out = append(out, s)
		}
	}
	return out, nil
}

// dnatedTo matches the conntrack entries of connections DNATed to a:
// the reply comes from a, but the original packet was addressed to
// another address.
type dnatedTo netip.Addr

func (a dnatedTo) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	from, ok := netip.AddrFromSlice(f.Reverse.SrcIP)
	if !ok || from.Unmap() != netip.Addr(a) {
		return false
	}
	to, ok := netip.AddrFromSlice(f.Forward.DstIP)
	return ok && to.Unmap() != netip.Addr(a)
}

var _ netlink.CustomConntrackFilter = dnatedTo{}

// isNotExist recognises the kernel's ENOENT: a missing table or chain.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist)
}
