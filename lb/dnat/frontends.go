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
	Backends []netip.Addr // task addresses; the destination port is kept
}

// Port is a port published on the node.
type Port struct {
	Name     string
	Port     uint16 // published port on the node
	Proto    string // "tcp" or "udp"
	Target   uint16 // task port
	Backends []netip.Addr
}

// maxName bounds the name in a rule comment; the kernel keeps at most
// 256 bytes of user data per rule.
const maxName = 64

// frontends is the sorted, validated input of a Sync, without the
// frontends that have no backend: exactly what the rules are made from,
// so that two equal values make the same table.
type frontends struct {
	vips  []VIP
	ports []Port
}

// normalize validates and sorts its input into a copy; the caller's
// slices are not touched.
func normalize(vips []VIP, ports []Port) (frontends, error) {
	var fe frontends
	seenVIP := map[netip.Addr]bool{}
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
		if len(backends) > 0 {
			fe.vips = append(fe.vips, VIP{Name: shorten(v.Name), Addr: addr, Source: src, Backends: backends})
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
		if len(backends) > 0 {
			fe.ports = append(fe.ports, Port{Name: shorten(p.Name), Port: p.Port, Proto: p.Proto, Target: p.Target, Backends: backends})
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
func sortedBackends(in []netip.Addr) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		a = a.Unmap()
		if !a.Is4() {
			return nil, fmt.Errorf("%w: backend %s is not an IPv4 address", ErrInvalid, a)
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

func shorten(name string) string {
	if len(name) > maxName {
		return strings.ToValidUTF8(name[:maxName], "")
	}
	return name
}

func (f frontends) equal(o frontends) bool {
	return slices.EqualFunc(f.vips, o.vips, func(a, b VIP) bool {
		return a.Name == b.Name && a.Addr == b.Addr && a.Source == b.Source && slices.Equal(a.Backends, b.Backends)
	}) && slices.EqualFunc(f.ports, o.ports, func(a, b Port) bool {
		return a.Name == b.Name && a.Port == b.Port && a.Proto == b.Proto && a.Target == b.Target && slices.Equal(a.Backends, b.Backends)
	})
}
