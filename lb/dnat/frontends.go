package dnat

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrInvalid classifies a frontend or configuration the package refuses.
var ErrInvalid = errors.New("invalid load-balancer frontend")

// VIP is a service's virtual IP on one network.
type VIP struct {
	Name     string       // for rule comments, e.g. the service's name
	Addr     netip.Addr   // the VIP (IPv4)
	Source   netip.Prefix // the network's subnet: only sources inside it (and the host itself) are balanced
	Backends []netip.Addr // addresses of the tasks on this node; the destination port is kept
	// Remote are the addresses of the service's tasks on other nodes,
	// reached over the overlay (the same L2 segment). The tasks of the
	// network on this node share connections with Backends; the host's
	// own connections go to Backends only (doc.go says why). An address
	// must not be a backend of this node in any VIP.
	Remote []netip.Addr
}

// Port is a port published on the node.
type Port struct {
	Name     string
	Port     uint16 // published port on the node
	Proto    string // "tcp" or "udp"
	Target   uint16 // task port
	Backends []netip.Addr
	// Remote are the other nodes that publish the same port, each with
	// its share: new connections are spread over Backends (one share
	// each, to Target) and Remote (Weight shares each, to Node:Port), and
	// those sent to a node are masqueraded. A connection from a node
	// (see Manager.SetNodes) goes to Backends only.
	Remote []Remote
}

// Remote is another node that publishes a Port.
type Remote struct {
	Node   netip.Addr // the node's address (IPv4) where it publishes the port: its underlay address
	Weight int        // how many tasks of the service run there, 1 to MaxWeight
}

// MaxWeight bounds Remote.Weight: each share is an element of a map,
// and a bug upstream should not make millions of them.
const MaxWeight = 4096

// maxName bounds the name in a rule comment; the kernel keeps at most
// 256 bytes of user data per rule.
const maxName = 64

// frontends is the sorted, validated input of a Sync, without the
// frontends that have no backend: exactly what the rules are made from,
// so that two equal values make the same table.
type frontends struct {
	vips  []VIP
	ports []Port
	// nodes is Manager.SetNodes' list, kept only when a port has remote
	// nodes: the only rules that look at it (withNodes).
	nodes []netip.Addr
}

// normalize validates and sorts its input into a copy; the caller's
// slices are not touched.
func normalize(vips []VIP, ports []Port) (frontends, error) {
	var fe frontends
	seenVIP := map[netip.Addr]bool{}
	local := map[netip.Addr]string{} // every VIP's local backends, to their VIP's name
	for _, v := range vips {
		addr := v.Addr.Unmap()
		if !addr.Is4() {
			return frontends{}, fmt.Errorf("%w: VIP %s of %q is not an IPv4 address", ErrInvalid, v.Addr, v.Name)
		}
		if seenVIP[addr] {
			return frontends{}, fmt.Errorf("%w: VIP %s given twice", ErrInvalid, addr)
		}
		seenVIP[addr] = true
		if !v.Source.IsValid() || !v.Source.Addr().Unmap().Is4() {
			return frontends{}, fmt.Errorf("%w: VIP %s of %q: source %s is not an IPv4 prefix", ErrInvalid, addr, v.Name, v.Source)
		}
		src := netip.PrefixFrom(v.Source.Addr().Unmap(), min(v.Source.Bits(), 32)).Masked()
		backends, err := sortedBackends(v.Backends)
		if err != nil {
			return frontends{}, fmt.Errorf("VIP %s of %q: %w", addr, v.Name, err)
		}
		remote, err := sortedAddrs(v.Remote, "remote task")
		if err != nil {
			return frontends{}, fmt.Errorf("VIP %s of %q: %w", addr, v.Name, err)
		}
		for _, b := range backends {
			local[b] = v.Name
		}
		if len(backends)+len(remote) > 0 {
			fe.vips = append(fe.vips, VIP{Name: shorten(v.Name), Addr: addr, Source: src, Backends: backends, Remote: remote})
		}
	}
	// Postrouting tells a VIP's local tasks from its remote ones by
	// address alone (doc.go), so no address may be both.
	for _, v := range fe.vips {
		for _, r := range v.Remote {
			if name, ok := local[r]; ok {
				return frontends{}, fmt.Errorf("%w: VIP %s of %q: remote task %s is a local backend of %q", ErrInvalid, v.Addr, v.Name, r, name)
			}
		}
	}
	type key struct {
		proto string
		port  uint16
	}
	seenPort := map[key]bool{}
	for _, p := range ports {
		if p.Proto != "tcp" && p.Proto != "udp" {
			return frontends{}, fmt.Errorf("%w: port %d of %q: protocol %q, want tcp or udp", ErrInvalid, p.Port, p.Name, p.Proto)
		}
		if p.Port == 0 || p.Target == 0 {
			return frontends{}, fmt.Errorf("%w: port %d/%s of %q: port and target must not be 0 (target %d)", ErrInvalid, p.Port, p.Proto, p.Name, p.Target)
		}
		k := key{p.Proto, p.Port}
		if seenPort[k] {
			return frontends{}, fmt.Errorf("%w: port %d/%s given twice", ErrInvalid, p.Port, p.Proto)
		}
		seenPort[k] = true
		backends, err := sortedBackends(p.Backends)
		if err != nil {
			return frontends{}, fmt.Errorf("port %d/%s of %q: %w", p.Port, p.Proto, p.Name, err)
		}
		remote, err := sortedRemotes(p.Remote)
		if err != nil {
			return frontends{}, fmt.Errorf("port %d/%s of %q: %w", p.Port, p.Proto, p.Name, err)
		}
		if len(backends)+len(remote) > 0 {
			fe.ports = append(fe.ports, Port{Name: shorten(p.Name), Port: p.Port, Proto: p.Proto, Target: p.Target, Backends: backends, Remote: remote})
		}
	}
	slices.SortFunc(fe.vips, func(a, b VIP) int { return a.Addr.Compare(b.Addr) })
	slices.SortFunc(fe.ports, func(a, b Port) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	return fe, nil
}

// sortedBackends returns the IPv4 backends sorted and without repeats: a
// backend given twice would get twice the share.
func sortedBackends(in []netip.Addr) ([]netip.Addr, error) { return sortedAddrs(in, "backend") }

// sortedAddrs returns IPv4 addresses sorted and without repeats; what
// names them in the error.
func sortedAddrs(in []netip.Addr, what string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("%w: %s %s is not an IPv4 address", ErrInvalid, what, a)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// sortedRemotes validates a port's remote nodes and returns them sorted
// by address. A node listed twice is refused rather than guessed at:
// its two weights may be two views of the same tasks.
func sortedRemotes(in []Remote) ([]Remote, error) {
	out := make([]Remote, 0, len(in))
	for _, r := range in {
		n := r.Node.Unmap()
		if !n.Is4() {
			return nil, fmt.Errorf("%w: remote node %s is not an IPv4 address", ErrInvalid, r.Node)
		}
		if r.Weight < 1 || r.Weight > MaxWeight {
			return nil, fmt.Errorf("%w: remote node %s: weight %d, want 1 to %d", ErrInvalid, n, r.Weight, MaxWeight)
		}
		out = append(out, Remote{Node: n, Weight: r.Weight})
	}
	slices.SortFunc(out, func(a, b Remote) int { return a.Node.Compare(b.Node) })
	for i := 1; i < len(out); i++ {
		if out[i].Node == out[i-1].Node {
			return nil, fmt.Errorf("%w: remote node %s listed twice", ErrInvalid, out[i].Node)
		}
	}
	return out, nil
}

// normalizeNodes validates SetNodes' list and returns it sorted,
// without repeats.
func normalizeNodes(in []netip.Addr) ([]netip.Addr, error) { return sortedAddrs(in, "node") }

// withNodes returns f with the node list, which only the rules of ports
// with remote nodes use: without such a port a new list changes nothing
// and, through equal, writes nothing.
func (f frontends) withNodes(nodes []netip.Addr) frontends {
	f.nodes = nil
	if f.mesh() {
		f.nodes = nodes
	}
	return f
}

// mesh says whether a port has remote nodes.
func (f frontends) mesh() bool {
	return slices.ContainsFunc(f.ports, func(p Port) bool { return len(p.Remote) > 0 })
}

// remoteVIPs says whether a VIP has remote tasks.
func (f frontends) remoteVIPs() bool {
	return slices.ContainsFunc(f.vips, func(v VIP) bool { return len(v.Remote) > 0 })
}

func shorten(name string) string {
	if len(name) > maxName {
		return strings.ToValidUTF8(name[:maxName], "")
	}
	return name
}

func (f frontends) equal(o frontends) bool {
	return slices.EqualFunc(f.vips, o.vips, func(a, b VIP) bool {
		return a.Name == b.Name && a.Addr == b.Addr && a.Source == b.Source &&
			slices.Equal(a.Backends, b.Backends) && slices.Equal(a.Remote, b.Remote)
	}) && slices.EqualFunc(f.ports, o.ports, func(a, b Port) bool {
		return a.Name == b.Name && a.Port == b.Port && a.Proto == b.Proto && a.Target == b.Target &&
			slices.Equal(a.Backends, b.Backends) && slices.Equal(a.Remote, b.Remote)
	}) && slices.Equal(f.nodes, o.nodes)
}
