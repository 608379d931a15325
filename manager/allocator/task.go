package allocator

import (
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// AllocateTask fills t.networks, one attachment per network of t's spec
// (and of svc's spec, the older place), in that order, and reports whether
// it changed t. Each attachment carries a copy of the network, the task's
// address on it ("10.0.1.5/24": the lowest free one of the network's
// ip_range, never the gateway, a VIP or another live task's; or the static
// address the attachment asks for), and its aliases plus the service's
// short name within its stack, so that "web" resolves inside the stack.
//
// svc is t's service, already through AllocateService: its endpoint (VIPs,
// published ports) is copied into t, as swarmkit does, so that an agent
// needs nothing but the task; a service that is not allocated yet is an
// ErrNotAllocated error. svc may be nil for a task whose service is gone.
//
// Tasks in network mode host or none get no attachments. A terminal task
// is left alone: addresses given to it would never be used, and the next
// rebuild would drop them anyway. An allocated task keeps its addresses;
// calling again returns false.
func (a *Allocator) AllocateTask(t *typesv1.Task, svc *typesv1.Service) (bool, error) {
	if !Live(t) {
		return false, nil
	}
	what := "task " + t.GetId()
	var endpoint *typesv1.Endpoint
	if svc != nil {
		plan, err := a.planService(svc)
		if err != nil {
			return false, errorf(ErrNotAllocated, "%s: service %s is not allocated: %v", what, serviceName(svc), err)
		}
		if !endpointEqual(svc.GetEndpoint(), plan.endpoint) {
			return false, errorf(ErrNotAllocated, "%s: service %s is not allocated yet", what, serviceName(svc))
		}
		// Registering the service's VIPs and ports changes nothing when
		// New or AllocateService already did, and keeps the task from
		// taking a VIP when neither did.
		a.commitService(svc, plan)
		endpoint = proto.CloneOf(svc.GetEndpoint())
	}

	var want []*typesv1.NetworkAttachmentConfig
	switch t.GetSpec().GetContainer().GetNetworkMode() {
	case "host", "none":
		// The container uses the host's stack or none at all: an address
		// would be reserved for nothing.
	default:
		want = attachments(t.GetSpec().GetNetworks(), svc.GetSpec().GetNetworks())
	}
	alias := shortName(t, svc)
	who := taskOwner(t.GetId())

	old := map[string]*typesv1.NetworkAttachment{}
	for _, att := range t.GetNetworks() {
		old[att.GetNetwork().GetId()] = att
	}
	var claims []claim
	var out []*typesv1.NetworkAttachment
	for _, w := range want {
		n, err := a.lookupNetwork(w.GetTarget(), what)
		if err != nil {
			return false, err
		}
		var addrs []string
		if static := w.GetAddresses(); len(static) > 0 {
			for _, s := range static {
				addr, p, err := a.static(n, s, who, what)
				if err != nil {
					return false, err
				}
				claims = append(claims, claim{w.GetTarget(), addr})
				addrs = append(addrs, p.cidr(addr))
			}
		} else if kept, ok := a.keep(n, old[w.GetTarget()].GetAddresses(), who); ok {
			for _, addr := range kept {
				claims = append(claims, claim{w.GetTarget(), addr})
				addrs = append(addrs, n.poolFor(addr).cidr(addr))
			}
		} else {
			addr, p, ok := n.lowestFree()
			if !ok {
				return false, errorf(ErrExhausted, "could not find an available IP on network %s", n.name)
			}
			claims = append(claims, claim{w.GetTarget(), addr})
			addrs = append(addrs, p.cidr(addr))
		}
		aliases := slices.Clone(w.GetAliases())
		if alias != "" && !slices.Contains(aliases, alias) {
			aliases = append(aliases, alias)
		}
		out = append(out, &typesv1.NetworkAttachment{
			Network:   proto.CloneOf(n.obj),
			Addresses: addrs,
			Aliases:   aliases,
		})
	}

	a.releaseTask(t.GetId())
	for _, c := range claims {
		a.networks[c.network].poolFor(c.addr).claim(c.addr, who)
	}
	if len(claims) > 0 {
		a.taskAddrs[t.GetId()] = claims
	}

	changed := false
	if !attachmentsEqual(t.GetNetworks(), out) {
		t.Networks = out
		changed = true
	}
	if svc != nil && !endpointEqual(t.GetEndpoint(), endpoint) {
		t.Endpoint = endpoint
		changed = true
	}
	return changed, nil
}

// static checks an address an attachment asks for ("10.0.1.5" or
// "10.0.1.5/24"): inside the network's subnets (ip_range does not apply:
// leaving static addresses outside the dynamic range is what it is for),
// not the network, broadcast or gateway address, and free.
func (a *Allocator) static(n *network, s, who, what string) (netip.Addr, *pool, error) {
	addr, err := parseAddr(s)
	if err != nil {
		return netip.Addr{}, nil, errorf(ErrInvalid, "%s: invalid address %q for network %s", what, s, n.name)
	}
	p := n.poolFor(addr)
	if p == nil || !p.hostAddress(addr) {
		return netip.Addr{}, nil, errorf(ErrInvalid, "%s: address %s is not a host address of network %s", what, addr, n.name)
	}
	if holder := p.owner(addr); holder != "" && holder != who {
		return netip.Addr{}, nil, errorf(ErrInUse, "%s: address %s on network %s is already in use by %s", what, addr, n.name, a.describe(holder))
	}
	return addr, p, nil
}

// keep reports whether the addresses a task already has on n may stay
// with it: all of them valid, free or already its own.
func (a *Allocator) keep(n *network, stored []string, who string) ([]netip.Addr, bool) {
	if len(stored) == 0 {
		return nil, false
	}
	var out []netip.Addr
	for _, s := range stored {
		addr, _, ok := a.reuse(n, s, who)
		if !ok {
			return nil, false
		}
		out = append(out, addr)
	}
	return out, true
}

// shortName is the service's name within its stack ("web" for
// "getstartedlab_web"), the alias Docker gives stack services on every
// network; "" for a service outside any stack.
func shortName(t *typesv1.Task, svc *typesv1.Service) string {
	ann := svc.GetSpec().GetAnnotations()
	if ann == nil {
		ann = t.GetServiceAnnotations()
	}
	stack := ann.GetLabels()[store.StackLabel]
	if stack == "" {
		return ""
	}
	short, ok := strings.CutPrefix(ann.GetName(), stack+"_")
	if !ok {
		return ""
	}
	return short
}

func attachmentsEqual(x, y []*typesv1.NetworkAttachment) bool {
	return slices.EqualFunc(x, y, func(a, b *typesv1.NetworkAttachment) bool { return proto.Equal(a, b) })
}
