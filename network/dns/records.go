package dns

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

	mdns "github.com/miekg/dns"
)

// TTLs of the answers. Docker answers 600 s for every service name; we keep
// that for a VIP, which lives as long as the service does, so that clients
// that cache (JVMs, nginx's resolver, nscd) are spared queries for nothing.
// Task IPs change with every restart, scale and rolling update, and a cached
// task IP is a connection to a container that no longer exists, so those
// answers carry TTL 0: a client asks again each time and sees a change at
// once. Queries for them are answered from memory on the same host, so not
// caching them costs next to nothing.
const (
	vipTTL  = 600
	taskTTL = 0
)

// tasksPrefix is the label that asks for a service's task IPs whatever its
// endpoint mode, as in Docker (`tasks.web`).
const tasksPrefix = "tasks."

// Record is what the server knows about one service on one network.
type Record struct {
	// Network is the id of the network. SetRecords ignores a record whose
	// Network is set and names another network, so that a wrong push
	// cannot make a service visible where it is not attached; empty means
	// the network SetRecords was called for.
	Network string
	// Names resolve to the service: its short name ("web"), its full name
	// ("getstartedlab_web") and its aliases on the network. Matched
	// without regard to case, with or without a trailing dot.
	Names []string
	// VIP is the service's virtual IP on the network; nil for a dnsrr
	// service, whose names then answer the task IPs.
	VIP net.IP
	// Tasks are the IPs on the network of the service's RUNNING tasks.
	Tasks []net.IP
}

// table is one network's answers, built by SetRecords and never changed
// afterwards (but for the rotation counters), so that queries read it
// without a lock.
type table struct {
	names map[string]*entry // canonical name (lower case, trailing dot) → answer
}

// entry is the answer for one name.
type entry struct {
	v4, v6 []net.IP // sorted, no duplicates; v4 in 4-byte form
	ttl    uint32
	// next rotates the order of the addresses from one query to the next,
	// which spreads clients that take the first address over all of them.
	// A counter, not a random number, keeps tests deterministic.
	next atomic.Uint32
}

// lookup returns the entry for a query name, or nil when the network has
// no such name.
func (t *table) lookup(qname string) *entry {
	if t == nil {
		return nil
	}
	return t.names[mdns.CanonicalName(qname)]
}

// answer returns the records for a question about e: A or AAAA records (both
// for ANY), each list rotated by one from the previous query. Other types
// get no records, which the caller sends as NOERROR with an empty answer:
// the name exists, it just has no data of that type.
func (e *entry) answer(q mdns.Question) []mdns.RR {
	var want4, want6 bool
	switch q.Qtype {
	case mdns.TypeA:
		want4 = true
	case mdns.TypeAAAA:
		want6 = true
	case mdns.TypeANY:
		want4, want6 = true, true
	default:
		return nil
	}
	n := 0
	if want4 {
		n += len(e.v4)
	}
	if want6 {
		n += len(e.v6)
	}
	if n == 0 {
		return nil
	}
	start := int(e.next.Add(1) - 1)
	rrs := make([]mdns.RR, 0, n)
	hdr := mdns.RR_Header{Name: q.Name, Class: mdns.ClassINET, Ttl: e.ttl}
	if want4 {
		hdr.Rrtype = mdns.TypeA
		for i := range e.v4 {
			rrs = append(rrs, &mdns.A{Hdr: hdr, A: e.v4[(start+i)%len(e.v4)]})
		}
	}
	if want6 {
		hdr.Rrtype = mdns.TypeAAAA
		for i := range e.v6 {
			rrs = append(rrs, &mdns.AAAA{Hdr: hdr, AAAA: e.v6[(start+i)%len(e.v6)]})
		}
	}
	return rrs
}

// buildTable turns a network's records into a table. It also returns what
// it had to skip, for the caller to log.
//
// Two services may claim the same name on a network (an alias given to
// both): the name then answers the addresses of both, as Docker does,
// rather than one of them chosen by the order of the push.
func buildTable(network string, recs []Record) (*table, []string) {
	var problems []string
	type acc struct {
		addrs map[netip.Addr]struct{}
		ttl   uint32
	}
	names := map[string]*acc{}
	add := func(name string, ttl uint32, ips []netip.Addr) {
		a := names[name]
		if a == nil {
			a = &acc{addrs: map[netip.Addr]struct{}{}, ttl: ttl}
			names[name] = a
		}
		a.ttl = min(a.ttl, ttl)
		for _, ip := range ips {
			a.addrs[ip] = struct{}{}
		}
	}

	for _, r := range recs {
		if r.Network != "" && r.Network != network {
			problems = append(problems, fmt.Sprintf("record for names %v belongs to network %q, not %q", r.Names, r.Network, network))
			continue
		}
		var vip []netip.Addr
		if r.VIP != nil {
			ip, ok := toAddr(r.VIP)
			if !ok {
				problems = append(problems, fmt.Sprintf("record for names %v: invalid VIP %v", r.Names, r.VIP))
				continue
			}
			vip = []netip.Addr{ip}
		}
		tasks := make([]netip.Addr, 0, len(r.Tasks))
		for _, t := range r.Tasks {
			ip, ok := toAddr(t)
			if !ok {
				problems = append(problems, fmt.Sprintf("record for names %v: invalid task IP %v", r.Names, t))
				continue
			}
			tasks = append(tasks, ip)
		}
		for _, name := range r.Names {
			if _, ok := mdns.IsDomainName(name); !ok || name == "" || name == "." {
				problems = append(problems, fmt.Sprintf("invalid name %q", name))
				continue
			}
			cn := mdns.CanonicalName(name)
			if vip != nil {
				add(cn, vipTTL, vip)
			} else {
				add(cn, taskTTL, tasks)
			}
			add(tasksPrefix+cn, taskTTL, tasks)
		}
	}

	t := &table{names: make(map[string]*entry, len(names))}
	for name, a := range names {
		e := &entry{ttl: a.ttl}
		sorted := make([]netip.Addr, 0, len(a.addrs))
		for ip := range a.addrs {
			sorted = append(sorted, ip)
		}
		slices.SortFunc(sorted, netip.Addr.Compare)
		for _, ip := range sorted {
			if ip.Is4() {
				e.v4 = append(e.v4, ip.AsSlice())
			} else {
				e.v6 = append(e.v6, ip.AsSlice())
			}
		}
		t.names[name] = e
	}
	return t, problems
}

// toAddr converts an IP, v4-in-v6 forms included, to a comparable address.
func toAddr(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	a = a.Unmap() // net.ParseIP gives IPv4 addresses in 16 bytes
	if !ok || !a.IsValid() || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}
