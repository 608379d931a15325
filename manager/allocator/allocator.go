// Package allocator hands out what must be unique across the cluster:
// network subnets, service virtual IPs, task addresses and published
// ingress ports.
//
// It keeps no state of its own. Every allocation is written into the
// objects themselves (network.ipam, service.endpoint.virtual_ips and
// .ports, task.networks[].addresses), so the Raft store is the only record,
// and an Allocator is rebuilt from the store's lists with New whenever the
// leader wants one: after a manager restart, a leader change, or simply at
// the start of every pass. Within a pass the Allocator's bitmaps are kept
// up to date as it allocates, so one pass never hands out a thing twice.
//
// A task's addresses count as used only while the task is live (state
// below COMPLETE). A terminal task keeps its addresses in its record, for
// history, but a rebuild ignores them: that is what keeps shoal from
// leaking addresses the way `docker stack rm` leaks ingress addresses
// (moby/moby#37338), where a long-lived cluster ends with "could not find
// an available IP".
//
// The allocator is pure: no store, no clock, no goroutines. It is not safe
// for concurrent use; one pass owns it.
package allocator

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Dynamic published ports come from Docker's range, so that firewall rules
// written for a Docker swarm keep working.
const (
	DynamicPortStart = 30000
	DynamicPortEnd   = 32767
)

// Allocator holds the used subnets, addresses and ports of a cluster, as
// rebuilt from the stored objects and updated by the allocations made
// since.
type Allocator struct {
	// networks are the allocated networks, by id.
	networks map[string]*network
	// pending are networks stored without an allocation yet (id → name):
	// known, so that an attachment to one gets "not allocated yet" rather
	// than "not found".
	pending map[string]string
	// reserved are the explicit subnets of pending networks. Automatic
	// carving skips them, so that a network with `ipam.config.subnet`
	// still gets its subnet when its turn comes in the pass.
	reserved map[string][]netip.Prefix

	// ports maps a published ingress port to the id of the service that
	// holds it.
	ports map[portKey]string

	// What each task and service holds, so that releasing needs no scan.
	taskAddrs   map[string][]claim
	serviceVIPs map[string][]claim
	servicePort map[string][]portKey
	// serviceNames name the holders of ports in errors.
	serviceNames map[string]string
}

// network is an allocated network: the object (for task attachments) and
// its pools in the order of its IPAM configs.
type network struct {
	obj   *typesv1.Network
	name  string
	pools []*pool
}

// claim is one address held on one network.
type claim struct {
	network string
	addr    netip.Addr
}

// portKey is a published ingress port: TCP 80 and UDP 80 are different.
type portKey struct {
	proto typesv1.PortConfig_Protocol
	port  uint32
}

func keyOf(p *typesv1.PortConfig) portKey {
	return portKey{proto: p.GetProtocol(), port: p.GetPublishedPort()}
}

// String is how a port reads in errors: "4000" for TCP as Docker prints
// it, "4000/udp" otherwise.
func (k portKey) String() string {
	s := strconv.FormatUint(uint64(k.port), 10)
	if k.proto != typesv1.PortConfig_PROTOCOL_TCP {
		s += "/" + strings.ToLower(strings.TrimPrefix(k.proto.String(), "PROTOCOL_"))
	}
	return s
}

// Live reports whether t's addresses count as used: until the task has
// ended. States only move forward, so a task that reached COMPLETE or
// beyond never needs them again, even if its record still lists them.
func Live(t *typesv1.Task) bool {
	return t.GetStatus().GetState() < typesv1.TaskState_TASK_STATE_COMPLETE
}

func empty() *Allocator {
	return &Allocator{
		networks:     map[string]*network{},
		pending:      map[string]string{},
		reserved:     map[string][]netip.Prefix{},
		ports:        map[portKey]string{},
		taskAddrs:    map[string][]claim{},
		serviceVIPs:  map[string][]claim{},
		servicePort:  map[string][]portKey{},
		serviceNames: map[string]string{},
	}
}

// New rebuilds an allocator from the stored networks, services and tasks
// (typically everything in the store, terminal tasks included: they are
// ignored). What is not allocated yet holds nothing, except that the
// explicit subnets of unallocated networks and the explicit published
// ports of services are kept from automatic allocation, so that they are
// still free when their turn comes. Allocate the rest with
// AllocateNetwork, AllocateService and AllocateTask, in that order.
//
// New fails when the stored allocations contradict each other (two live
// tasks on one address, overlapping allocated subnets, a dynamic port held
// by two services). The allocator never writes such a state, so it means a
// bug or a hand-edited store, and allocating on top of it would hide it.
// The one exception is a published port a service asks for explicitly
// while another already holds it (the control API cannot see dynamic
// ports): that is left to AllocateService to report to the user.
func New(networks []*typesv1.Network, services []*typesv1.Service, tasks []*typesv1.Task) (*Allocator, error) {
	a := empty()
	for _, n := range networks {
		if !allocated(n) {
			a.addPending(n)
			continue
		}
		if err := a.addNetwork(n); err != nil {
			return nil, err
		}
	}

	// Dynamic ports first: they were handed out by the allocator and are
	// unique by construction, while explicit ones may legitimately clash
	// with them (see above).
	for _, s := range services {
		a.serviceNames[s.GetId()] = serviceName(s)
		explicit := explicitPorts(s)
		for _, p := range s.GetEndpoint().GetPorts() {
			k := keyOf(p)
			if !ingress(p) || k.port == 0 || explicit[k] {
				continue
			}
			if other, ok := a.ports[k]; ok && other != s.GetId() {
				return nil, errorf(ErrInUse, "rebuild allocator: port %s is held by both service %s and service %s", k, a.serviceNames[other], serviceName(s))
			}
			a.claimPort(k, s.GetId())
		}
	}
	for _, s := range services {
		for k := range explicitPorts(s) {
			if _, ok := a.ports[k]; !ok {
				a.claimPort(k, s.GetId())
			}
		}
	}

	for _, s := range services {
		for _, v := range s.GetEndpoint().GetVirtualIps() {
			n := a.networks[v.GetNetworkId()]
			if n == nil {
				// The network is gone; so is the meaning of the address.
				continue
			}
			who := vipOwner(s.GetId())
			if err := a.restore(n, v.GetAddr(), who, "service "+serviceName(s)); err != nil {
				return nil, err
			}
			a.serviceVIPs[s.GetId()] = append(a.serviceVIPs[s.GetId()], claim{n.obj.GetId(), mustAddr(v.GetAddr())})
		}
	}
	for _, t := range tasks {
		if !Live(t) {
			continue
		}
		for _, att := range t.GetNetworks() {
			n := a.networks[att.GetNetwork().GetId()]
			if n == nil {
				continue
			}
			for _, s := range att.GetAddresses() {
				if err := a.restore(n, s, taskOwner(t.GetId()), "task "+t.GetId()); err != nil {
					return nil, err
				}
				a.taskAddrs[t.GetId()] = append(a.taskAddrs[t.GetId()], claim{n.obj.GetId(), mustAddr(s)})
			}
		}
	}
	return a, nil
}

// restore claims a stored address for who, refusing one that is not in the
// network or is already held.
func (a *Allocator) restore(n *network, s, who, what string) error {
	addr, err := parseAddr(s)
	if err != nil {
		return errorf(ErrInvalid, "rebuild allocator: %s: address %q on network %s: %v", what, s, n.name, err)
	}
	p := n.poolFor(addr)
	if p == nil || !p.hostAddress(addr) {
		return errorf(ErrInvalid, "rebuild allocator: %s: address %s is not a host address of network %s", what, addr, n.name)
	}
	if holder := p.owner(addr); holder != "" && holder != who {
		return errorf(ErrInUse, "rebuild allocator: address %s on network %s is held by both %s and %s", addr, n.name, a.describe(holder), what)
	}
	p.claim(addr, who)
	return nil
}

// mustAddr parses an address restore has already checked.
func mustAddr(s string) netip.Addr {
	a, _ := parseAddr(s)
	return a
}

// describe names an address's holder for an error message.
func (a *Allocator) describe(owner string) string {
	switch {
	case owner == ownerGateway:
		return "the gateway"
	case strings.HasPrefix(owner, taskPrefix):
		return "task " + strings.TrimPrefix(owner, taskPrefix)
	case strings.HasPrefix(owner, vipPrefix):
		id := strings.TrimPrefix(owner, vipPrefix)
		if name := a.serviceNames[id]; name != "" {
			return "the virtual IP of service " + name
		}
		return "the virtual IP of service " + id
	}
	return owner
}

func (a *Allocator) claimPort(k portKey, serviceID string) {
	a.ports[k] = serviceID
	a.servicePort[serviceID] = append(a.servicePort[serviceID], k)
}

// Release returns the addresses a task holds. Call it when a task ends or
// is deleted without rebuilding the allocator; New does it implicitly.
// Releasing a task twice, or a task whose old address has since gone to
// another task, frees nothing that is not the task's own.
func (a *Allocator) Release(t *typesv1.Task) {
	a.releaseTask(t.GetId())
}

func (a *Allocator) releaseTask(id string) {
	for _, c := range a.taskAddrs[id] {
		a.free(c, taskOwner(id))
	}
	delete(a.taskAddrs, id)
}

// ReleaseService returns a removed service's virtual IPs and published
// ports. Its tasks' addresses are theirs and are released with them.
func (a *Allocator) ReleaseService(s *typesv1.Service) {
	a.releaseService(s.GetId())
	delete(a.serviceNames, s.GetId())
}

func (a *Allocator) releaseService(id string) {
	for _, c := range a.serviceVIPs[id] {
		a.free(c, vipOwner(id))
	}
	delete(a.serviceVIPs, id)
	for _, k := range a.servicePort[id] {
		if a.ports[k] == id {
			delete(a.ports, k)
		}
	}
	delete(a.servicePort, id)
}

// ReleaseNetwork forgets a removed network, so that automatic carving may
// give its subnet to a new one.
func (a *Allocator) ReleaseNetwork(n *typesv1.Network) {
	delete(a.networks, n.GetId())
	delete(a.pending, n.GetId())
	delete(a.reserved, n.GetId())
}

func (a *Allocator) free(c claim, who string) {
	n := a.networks[c.network]
	if n == nil {
		return
	}
	if p := n.poolFor(c.addr); p != nil {
		p.free(c.addr, who)
	}
}

// poolFor is the pool whose subnet holds addr, or nil.
func (n *network) poolFor(addr netip.Addr) *pool {
	for _, p := range n.pools {
		if p.prefix.Contains(addr) {
			return p
		}
	}
	return nil
}

// parseAddr reads an IPv4 address written either bare ("10.0.1.5", as
// users write static addresses) or with its prefix ("10.0.1.5/24", as
// allocations are stored).
func parseAddr(s string) (netip.Addr, error) {
	var a netip.Addr
	var err error
	if strings.Contains(s, "/") {
		var p netip.Prefix
		p, err = netip.ParsePrefix(s)
		a = p.Addr()
	} else {
		a, err = netip.ParseAddr(s)
	}
	if err != nil {
		return netip.Addr{}, err
	}
	a = a.Unmap()
	if !a.Is4() {
		return netip.Addr{}, errorf(ErrInvalid, "only IPv4 addresses are supported")
	}
	return a, nil
}

func networkName(n *typesv1.Network) string {
	if name := n.GetSpec().GetAnnotations().GetName(); name != "" {
		return name
	}
	return n.GetId()
}

func serviceName(s *typesv1.Service) string {
	if name := s.GetSpec().GetAnnotations().GetName(); name != "" {
		return name
	}
	return s.GetId()
}

func ingress(p *typesv1.PortConfig) bool {
	return p.GetPublishMode() == typesv1.PortConfig_PUBLISH_MODE_INGRESS
}

// explicitPorts are the ingress ports a service asks for by number, in its
// current spec or in the spec its endpoint was computed from.
func explicitPorts(s *typesv1.Service) map[portKey]bool {
	out := map[portKey]bool{}
	for _, ports := range [][]*typesv1.PortConfig{s.GetSpec().GetEndpoint().GetPorts(), s.GetEndpoint().GetSpec().GetPorts()} {
		for _, p := range ports {
			if ingress(p) && p.GetPublishedPort() != 0 {
				out[keyOf(p)] = true
			}
		}
	}
	return out
}

// attachments merges the networks of a task spec and of a service spec
// (the older place, which Docker still honours), first occurrence first,
// one per network: aliases are merged, the first non-empty address list
// wins.
func attachments(lists ...[]*typesv1.NetworkAttachmentConfig) []*typesv1.NetworkAttachmentConfig {
	var out []*typesv1.NetworkAttachmentConfig
	index := map[string]int{}
	for _, l := range lists {
		for _, c := range l {
			i, seen := index[c.GetTarget()]
			if !seen {
				index[c.GetTarget()] = len(out)
				out = append(out, proto.CloneOf(c))
				continue
			}
			m := out[i]
			for _, al := range c.GetAliases() {
				if !slices.Contains(m.Aliases, al) {
					m.Aliases = append(m.Aliases, al)
				}
			}
			if len(m.Addresses) == 0 {
				m.Addresses = append(m.Addresses, c.GetAddresses()...)
			}
		}
	}
	return out
}
