// Package netctl is the node-local network controller of a manager's
// embedded agent: it keeps this node's service discovery (network/dns) and
// ingress load balancer (lb) in step with the store, and releases the
// network namespaces of tasks that ended. It reads the store directly, which
// only a manager can; worker nodes will get the same view from the
// dispatcher when multi-node clusters land.
package netctl

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/lb"
	"github.com/shoal-dev/shoal/manager/store"
	"github.com/shoal-dev/shoal/network"
	"github.com/shoal-dev/shoal/network/dns"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Controller syncs DNS records, published ports and backends.
type Controller struct {
	Store  *store.Store
	NodeID string
	Net    *network.Manager
	DNS    *dns.Server
	LB     *lb.Balancer
	// Kernel, when set, balances published ports and service VIPs in
	// the kernel; without it VIPs do not answer and every published port
	// goes through LB.
	Kernel Kernel
	Log    *slog.Logger

	listening map[string]string // network id → address the DNS server listens on
	published map[string]bool   // "port/proto" of ingress ports

	hostMu    sync.Mutex
	hostPorts map[string]*hostPort // "port/proto" → the task holding it

	k kernelState
	// nodeAddrs are the nodes' underlay addresses (the host part of what
	// each advertises), by node id, as of the last sync.
	nodeAddrs map[string]netip.Addr
}

// Run syncs on every store change until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Log = c.Log.With("component", "netctl")
	c.listening = map[string]string{}
	c.published = map[string]bool{}
	defer c.stopProbes()
	for ctx.Err() == nil {
		events := c.Store.ViewAndWatch(ctx, func(store.ReadTx) {})
		c.sync()
		tick := time.NewTicker(time.Second)
		for open := true; open; {
			select {
			case <-ctx.Done():
				tick.Stop()
				return
			case _, ok := <-events:
				if !ok {
					open = false
					break
				}
				// Coalesce a burst of changes into one sync.
				drain := time.After(2 * time.Millisecond)
			burst:
				for {
					select {
					case _, ok := <-events:
						if !ok {
							open = false
							break burst
						}
					case <-drain:
						break burst
					}
				}
				c.sync()
			case <-tick.C:
				// Bridges appear when the agent attaches a task, which the
				// store does not announce; a periodic pass picks them up.
				c.sync()
			}
		}
		tick.Stop()
	}
}

// running says whether a task should receive traffic: running and wanted.
func running(t *typesv1.Task) bool {
	return t.GetStatus().GetState() == typesv1.TaskState_TASK_STATE_RUNNING && t.GetDesiredState() == typesv1.TaskState_TASK_STATE_RUNNING
}

func addrIP(cidr string) net.IP {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return net.ParseIP(cidr)
	}
	return ip
}

func (c *Controller) sync() {
	var services []*typesv1.Service
	var tasks []*typesv1.Task
	c.Store.View(func(tx store.ReadTx) {
		services, _ = store.FindServices(tx, store.All)
		tasks, _ = store.FindTasks(tx, store.All)
	})
	byService := map[string][]*typesv1.Task{}
	attached := map[string]bool{}
	for _, id := range c.Net.Tasks() {
		attached[id] = true
	}
	for _, t := range tasks {
		byService[t.GetServiceId()] = append(byService[t.GetServiceId()], t)
		// An ended task's address goes back to the allocator; its veth
		// must leave the bridge before a new task gets that address.
		if t.GetNodeId() == c.NodeID && attached[t.GetId()] && t.GetStatus().GetState() >= typesv1.TaskState_TASK_STATE_COMPLETE {
			if err := c.Net.Detach(t.GetId()); err != nil {
				c.Log.Warn("detach ended task", "task.id", t.GetId(), "err", err)
			}
		}
	}
	c.nodeAddrs = c.readNodeAddrs()
	nodes := make([]netip.Addr, 0, len(c.nodeAddrs))
	for _, a := range c.nodeAddrs {
		nodes = append(nodes, a)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Less(nodes[j]) })
	c.k.mu.Lock()
	c.k.nodes = nodes
	c.k.mu.Unlock()
	c.syncPeers(tasks)
	c.syncDNS(services, byService)
	c.computeVIPs(services, byService)
	c.syncIngress(services, byService)
}

func (c *Controller) syncDNS(services []*typesv1.Service, byService map[string][]*typesv1.Task) {
	gws := c.Net.Gateways()
	for netID, gw := range gws {
		if c.listening[netID] == gw.String() {
			continue
		}
		if err := c.DNS.Listen(netID, gw); err != nil {
			c.Log.Warn("dns listen", "network.id", netID, "addr", gw, "err", err)
			continue
		}
		c.listening[netID] = gw.String()
	}
	for netID := range c.listening {
		if _, ok := gws[netID]; !ok {
			_ = c.DNS.Unlisten(netID)
			delete(c.listening, netID)
		}
	}
	records := map[string][]dns.Record{}
	for _, svc := range services {
		full := svc.GetSpec().GetAnnotations().GetName()
		names := []string{full}
		if stack := svc.GetSpec().GetAnnotations().GetLabels()[store.StackLabel]; stack != "" && strings.HasPrefix(full, stack+"_") {
			names = append(names, strings.TrimPrefix(full, stack+"_"))
		}
		vips := map[string]net.IP{}
		for _, v := range svc.GetEndpoint().GetVirtualIps() {
			vips[v.GetNetworkId()] = addrIP(v.GetAddr())
		}
		perNet := map[string]*dns.Record{}
		for _, t := range byService[svc.GetId()] {
			for _, a := range t.GetNetworks() {
				nid := a.GetNetwork().GetId()
				if _, ok := c.listening[nid]; !ok {
					continue
				}
				r := perNet[nid]
				if r == nil {
					r = &dns.Record{Network: nid, Names: append([]string(nil), names...)}
					if svc.GetSpec().GetEndpoint().GetMode() != typesv1.EndpointSpec_MODE_DNSRR {
						r.VIP = vips[nid]
					}
					for _, al := range a.GetAliases() {
						if !contains(r.Names, al) {
							r.Names = append(r.Names, al)
						}
					}
					perNet[nid] = r
				}
				if running(t) && len(a.GetAddresses()) > 0 {
					r.Tasks = append(r.Tasks, addrIP(a.GetAddresses()[0]))
				}
			}
		}
		for nid, r := range perNet {
			records[nid] = append(records[nid], *r)
		}
	}
	for netID := range c.listening {
		c.DNS.SetRecords(netID, records[netID])
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func protoName(p typesv1.PortConfig_Protocol) string {
	if p == typesv1.PortConfig_PROTOCOL_UDP {
		return "udp"
	}
	return "tcp"
}

// frontend is one published port on this node: an ingress port of a
// service (every node) or a mode host port of a task running here.
type frontend struct {
	name     string // service name, for logs and rule comments
	port     uint16
	proto    string
	target   uint16
	proxy    string // PROXY protocol version asked by the service's label
	backends []lb.Backend
	ids      []string // task ids of backends, in the same order
	ips      []netip.Addr
	// remote counts the running tasks on other nodes, by node address:
	// the routing mesh sends connections there, to the same port.
	remote map[netip.Addr]int
}

func (f *frontend) key() string { return strconv.Itoa(int(f.port)) + "/" + f.proto }

// userspaceBackends are the proxy's backends: the local tasks, and each
// other node with tasks (its own published port, once per task there),
// since the node's address cannot reach a task on another node directly.
func (f *frontend) userspaceBackends() []lb.Backend {
	out := append([]lb.Backend(nil), f.backends...)
	nodes := make([]netip.Addr, 0, len(f.remote))
	for a := range f.remote {
		nodes = append(nodes, a)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Less(nodes[j]) })
	for _, a := range nodes {
		for i := 0; i < f.remote[a]; i++ {
			out = append(out, lb.Backend{TaskID: "node/" + a.String() + "/" + strconv.Itoa(i), Addr: net.JoinHostPort(a.String(), strconv.Itoa(int(f.port)))})
		}
	}
	return out
}

// readNodeAddrs maps node ids to their underlay addresses.
func (c *Controller) readNodeAddrs() map[string]netip.Addr {
	var nodes []*typesv1.Node
	c.Store.View(func(tx store.ReadTx) { nodes, _ = store.FindNodes(tx, store.All) })
	out := map[string]netip.Addr{}
	for _, n := range nodes {
		host, _, err := net.SplitHostPort(n.GetStatus().GetAddr())
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
			out[n.GetId()] = a
		}
	}
	return out
}

// taskAddr is the task's address on its first network.
func taskAddr(t *typesv1.Task) (netip.Addr, bool) {
	if len(t.GetNetworks()) == 0 || len(t.GetNetworks()[0].GetAddresses()) == 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParsePrefix(t.GetNetworks()[0].GetAddresses()[0])
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Addr(), true
}

func (f *frontend) add(t *typesv1.Task) {
	ip, ok := taskAddr(t)
	if !ok {
		return
	}
	f.backends = append(f.backends, lb.Backend{TaskID: t.GetId(), Addr: net.JoinHostPort(ip.String(), strconv.Itoa(int(f.target)))})
	f.ids = append(f.ids, t.GetId())
	f.ips = append(f.ips, ip)
}

// syncIngress publishes every ingress port of every service on this node,
// and the mode host ports of this node's tasks (bound by PublishHost),
// and points them at the running tasks.
func (c *Controller) syncIngress(services []*typesv1.Service, byService map[string][]*typesv1.Task) {
	sort.Slice(services, func(i, j int) bool { return services[i].GetId() < services[j].GetId() })
	var fronts []*frontend
	want := map[string]bool{}
	ended := map[string]bool{} // this node's tasks that ended or are gone
	live := map[string]bool{}
	for _, svc := range services {
		name := svc.GetSpec().GetAnnotations().GetName()
		for _, p := range svc.GetEndpoint().GetPorts() {
			if p.GetPublishMode() != typesv1.PortConfig_PUBLISH_MODE_INGRESS || p.GetPublishedPort() == 0 {
				continue
			}
			f := &frontend{name: name, port: uint16(p.GetPublishedPort()), proto: protoName(p.GetProtocol()),
				target: uint16(p.GetTargetPort()), proxy: svc.GetSpec().GetAnnotations().GetLabels()[ProxyProtocolLabel]}
			for _, t := range byService[svc.GetId()] {
				if !running(t) {
					continue
				}
				if t.GetNodeId() == c.NodeID {
					f.add(t)
				} else if a, ok := c.nodeAddrs[t.GetNodeId()]; ok {
					if f.remote == nil {
						f.remote = map[netip.Addr]int{}
					}
					f.remote[a]++
				}
			}
			want[f.key()] = true
			fronts = append(fronts, f)
		}
		for _, t := range byService[svc.GetId()] {
			if t.GetNodeId() != c.NodeID {
				continue
			}
			if t.GetStatus().GetState() >= typesv1.TaskState_TASK_STATE_COMPLETE {
				ended[t.GetId()] = true
			} else {
				live[t.GetId()] = true
			}
		}
	}
	for key := range c.published {
		if !want[key] {
			port, proto, _ := strings.Cut(key, "/")
			n, _ := strconv.Atoi(port)
			_ = c.LB.Unpublish(uint16(n), proto)
			delete(c.published, key)
		}
	}
	for _, f := range fronts {
		if !c.published[f.key()] {
			err := c.LB.Publish(lb.PortConfig{Port: f.port, Protocol: f.proto, ProxyProtocol: f.proxy})
			if err != nil {
				c.Log.Warn("publish port", "service.name", f.name, "port", f.key(), "err", err)
				continue
			}
			c.published[f.key()] = true
		}
		c.LB.SetBackends(f.port, f.proto, f.userspaceBackends())
	}

	// Mode host ports: held while their task lives on this node.
	c.hostMu.Lock()
	for key, h := range c.hostPorts {
		if ended[h.task.GetId()] || !live[h.task.GetId()] {
			c.releaseHostLocked(key)
		}
	}
	var tasks []*typesv1.Task
	for _, list := range byService {
		tasks = append(tasks, list...)
	}
	byID := map[string]*typesv1.Task{}
	for _, t := range tasks {
		byID[t.GetId()] = t
	}
	keys := make([]string, 0, len(c.hostPorts))
	for key := range c.hostPorts {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		h := c.hostPorts[key]
		f := &frontend{name: h.name, port: h.port, proto: h.proto, target: h.target}
		if t := byID[h.task.GetId()]; t != nil && running(t) {
			f.add(t)
		}
		c.LB.SetBackends(f.port, f.proto, f.backends)
		fronts = append(fronts, f)
	}
	c.hostMu.Unlock()

	c.k.mu.Lock()
	c.k.fronts = fronts
	c.k.mu.Unlock()
	c.syncKernel()
}

// hostPort is a mode host port held for a task of this node.
type hostPort struct {
	task   *typesv1.Task
	name   string
	port   uint16
	proto  string
	target uint16
}

// PublishHost binds the mode host ports of task t on this node, before
// its container is made; an error names the port and fails the task.
// Tasks on the host's network bind their ports themselves.
func (c *Controller) PublishHost(t *typesv1.Task) error {
	if t.GetSpec().GetContainer().GetNetworkMode() == "host" {
		return nil
	}
	ports := t.GetEndpoint().GetPorts()
	if len(ports) == 0 {
		ports = t.GetEndpoint().GetSpec().GetPorts()
	}
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	if c.hostPorts == nil {
		c.hostPorts = map[string]*hostPort{}
	}
	var done []string
	for _, p := range ports {
		if p.GetPublishMode() != typesv1.PortConfig_PUBLISH_MODE_HOST || p.GetPublishedPort() == 0 {
			continue
		}
		h := &hostPort{task: t, name: t.GetServiceAnnotations().GetName(), port: uint16(p.GetPublishedPort()),
			proto: protoName(p.GetProtocol()), target: uint16(p.GetTargetPort())}
		key := strconv.Itoa(int(h.port)) + "/" + h.proto
		if old, ok := c.hostPorts[key]; ok {
			if old.task.GetId() == t.GetId() {
				continue
			}
			// Another task of this node holds it: the scheduler places
			// no two such tasks on a node, so the holder has ended and
			// its release is on its way.
			c.releaseHostLocked(key)
		}
		if err := c.LB.Publish(lb.PortConfig{Port: h.port, Protocol: h.proto}); err != nil {
			for _, k := range done {
				c.releaseHostLocked(k)
			}
			return fmt.Errorf("publish mode host port: %w", err)
		}
		c.hostPorts[key] = h
		done = append(done, key)
		c.Log.Info("host port published", "task.id", t.GetId(), "port", key)
	}
	return nil
}

// ReleaseHost frees the mode host ports task taskID holds on this node.
func (c *Controller) ReleaseHost(taskID string) {
	c.hostMu.Lock()
	defer c.hostMu.Unlock()
	for key, h := range c.hostPorts {
		if h.task.GetId() == taskID {
			c.releaseHostLocked(key)
		}
	}
}

func (c *Controller) releaseHostLocked(key string) {
	h := c.hostPorts[key]
	if h == nil {
		return
	}
	delete(c.hostPorts, key)
	if err := c.LB.Unpublish(h.port, h.proto); err != nil {
		c.Log.Warn("unpublish host port", "port", key, "err", err)
	}
	c.Log.Info("host port released", "task.id", h.task.GetId(), "port", key)
}

// ProxyProtocolLabel on a service asks the ingress to send a PROXY protocol
// header ("v1" or "v2") before the client's bytes, so the task learns the
// client's address.
const ProxyProtocolLabel = "com.shoal.ingress.proxy-protocol"
