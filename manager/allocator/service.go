package allocator

import (
	"net/netip"
	"slices"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// servicePlan is what a service's endpoint should be and what it holds
// then; nothing is claimed until the plan is committed, so a failed
// allocation changes neither the allocator nor the service.
type servicePlan struct {
	endpoint *typesv1.Endpoint
	ports    []portKey
	vips     []claim
}

// AllocateService fills s.endpoint from s.spec.endpoint and s's networks,
// and reports whether it changed s:
//
//   - ports: copied from the spec; an ingress port with published_port 0
//     gets the lowest free one of 30000–32767 (or keeps the one it already
//     had); explicit ingress ports must not be held by another service
//     (`port 4000 is already in use by service x`). Host-mode ports are
//     bound per node and are not the allocator's business.
//   - virtual_ips: one per attached network in endpoint mode VIP (the
//     default), none in DNSRR mode; an existing VIP is kept.
//
// Calling it again on an allocated service changes nothing and returns
// false; after a spec change it keeps what still fits and frees the rest.
func (a *Allocator) AllocateService(s *typesv1.Service) (bool, error) {
	plan, err := a.planService(s)
	if err != nil {
		return false, err
	}
	a.commitService(s, plan)
	if endpointEqual(s.GetEndpoint(), plan.endpoint) {
		return false, nil
	}
	s.Endpoint = plan.endpoint
	return true, nil
}

// commitService makes s hold what plan says, and nothing else.
func (a *Allocator) commitService(s *typesv1.Service, plan *servicePlan) {
	a.releaseService(s.GetId())
	a.serviceNames[s.GetId()] = serviceName(s)
	for _, k := range plan.ports {
		a.claimPort(k, s.GetId())
	}
	for _, c := range plan.vips {
		a.networks[c.network].poolFor(c.addr).claim(c.addr, vipOwner(s.GetId()))
	}
	a.serviceVIPs[s.GetId()] = plan.vips
}

// endpointEqual compares endpoints, an absent one being the empty one:
// a service with nothing to allocate must not look changed.
func endpointEqual(x, y *typesv1.Endpoint) bool {
	if x == nil {
		x = &typesv1.Endpoint{}
	}
	if y == nil {
		y = &typesv1.Endpoint{}
	}
	return proto.Equal(x, y)
}

func (a *Allocator) planService(s *typesv1.Service) (*servicePlan, error) {
	id, name := s.GetId(), serviceName(s)
	spec := s.GetSpec().GetEndpoint()
	plan := &servicePlan{endpoint: &typesv1.Endpoint{Spec: proto.CloneOf(spec)}}

	// Explicit ports first, so that a dynamic port never takes a number
	// this very service publishes explicitly.
	taken := map[portKey]bool{}
	for _, p := range spec.GetPorts() {
		if !ingress(p) || p.GetPublishedPort() == 0 {
			continue
		}
		k := keyOf(p)
		if taken[k] {
			return nil, errorf(ErrInvalid, "service %s publishes port %s twice", name, k)
		}
		if holder, ok := a.ports[k]; ok && holder != id {
			return nil, errorf(ErrInUse, "port %s is already in use by service %s", k, a.serviceNames[holder])
		}
		taken[k] = true
		plan.ports = append(plan.ports, k)
	}
	// A dynamic port this service already has is kept, so that a spec
	// change (a scale, a new image) does not move it under the users'
	// feet.
	var had []*typesv1.PortConfig
	for _, p := range s.GetEndpoint().GetPorts() {
		k := keyOf(p)
		if !ingress(p) || k.port < DynamicPortStart || k.port > DynamicPortEnd || taken[k] {
			continue
		}
		if holder, ok := a.ports[k]; ok && holder != id {
			continue
		}
		had = append(had, p)
	}
	// Two rounds: ports that keep theirs first, so that a new port,
	// listed earlier, cannot take a number a later one already has.
	var fresh []*typesv1.PortConfig
	for _, p := range spec.GetPorts() {
		c := proto.CloneOf(p)
		plan.endpoint.Ports = append(plan.endpoint.Ports, c)
		if !ingress(p) || p.GetPublishedPort() != 0 {
			continue
		}
		i := slices.IndexFunc(had, func(h *typesv1.PortConfig) bool {
			return h != nil && h.GetProtocol() == p.GetProtocol() && h.GetTargetPort() == p.GetTargetPort()
		})
		if i < 0 {
			fresh = append(fresh, c)
			continue
		}
		k := keyOf(had[i])
		had[i] = nil
		c.PublishedPort = k.port
		taken[k] = true
		plan.ports = append(plan.ports, k)
	}
	for _, c := range fresh {
		k, ok := a.freePort(c.GetProtocol(), id, taken)
		if !ok {
			return nil, errorf(ErrExhausted, "could not find an available port in %d-%d for service %s", DynamicPortStart, DynamicPortEnd, name)
		}
		c.PublishedPort = k.port
		taken[k] = true
		plan.ports = append(plan.ports, k)
	}

	if spec.GetMode() == typesv1.EndpointSpec_MODE_DNSRR {
		return plan, nil
	}
	old := map[string]string{}
	for _, v := range s.GetEndpoint().GetVirtualIps() {
		old[v.GetNetworkId()] = v.GetAddr()
	}
	for _, att := range attachments(s.GetSpec().GetTask().GetNetworks(), s.GetSpec().GetNetworks()) {
		n, err := a.lookupNetwork(att.GetTarget(), "service "+name)
		if err != nil {
			return nil, err
		}
		addr, p, ok := a.reuse(n, old[att.GetTarget()], vipOwner(id))
		if !ok {
			if addr, p, ok = n.lowestFree(); !ok {
				return nil, errorf(ErrExhausted, "could not find an available IP on network %s for the virtual IP of service %s", n.name, name)
			}
		}
		plan.vips = append(plan.vips, claim{att.GetTarget(), addr})
		plan.endpoint.VirtualIps = append(plan.endpoint.VirtualIps, &typesv1.VirtualIP{NetworkId: att.GetTarget(), Addr: p.cidr(addr)})
	}
	return plan, nil
}

// freePort is the lowest port of the dynamic range that the plan has not
// taken and no other service holds (what self holds now and the plan does
// not keep is freed when the plan is committed).
func (a *Allocator) freePort(proto typesv1.PortConfig_Protocol, self string, taken map[portKey]bool) (portKey, bool) {
	for port := uint32(DynamicPortStart); port <= DynamicPortEnd; port++ {
		k := portKey{proto: proto, port: port}
		if holder, held := a.ports[k]; (!held || holder == self) && !taken[k] {
			return k, true
		}
	}
	return portKey{}, false
}

// reuse reports whether the stored address s (possibly empty) may stay
// with who: it is a host address of n, inside one of its pools, and free
// or already who's.
func (a *Allocator) reuse(n *network, s, who string) (netip.Addr, *pool, bool) {
	if s == "" {
		return netip.Addr{}, nil, false
	}
	addr, err := parseAddr(s)
	if err != nil {
		return netip.Addr{}, nil, false
	}
	p := n.poolFor(addr)
	if p == nil || !p.hostAddress(addr) {
		return netip.Addr{}, nil, false
	}
	if holder := p.owner(addr); holder != "" && holder != who {
		return netip.Addr{}, nil, false
	}
	return addr, p, true
}

// lowestFree is the lowest free address of the network's pools, in the
// order of its IPAM configs.
func (n *network) lowestFree() (netip.Addr, *pool, bool) {
	for _, p := range n.pools {
		if addr, ok := p.lowestFree(); ok {
			return addr, p, true
		}
	}
	return netip.Addr{}, nil, false
}

// lookupNetwork finds an allocated network for what (a service or task,
// for the error message).
func (a *Allocator) lookupNetwork(id, what string) (*network, error) {
	if n := a.networks[id]; n != nil {
		return n, nil
	}
	if name, ok := a.pending[id]; ok {
		return nil, errorf(ErrNotAllocated, "%s: network %s is not allocated yet", what, name)
	}
	return nil, errorf(ErrNotFound, "%s: network %s not found", what, id)
}
