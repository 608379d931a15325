// Package netctl is the node-local network controller of a manager's
// embedded agent: it keeps this node's service discovery (network/dns) and
// ingress load balancer (lb) in step with the store, and releases the
// network namespaces of tasks that ended. It reads the store directly, which
// only a manager can; worker nodes will get the same view from the
// dispatcher when multi-node clusters land.
package netctl

import (
	"context"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
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
	Log    *slog.Logger

	listening map[string]string // network id → address the DNS server listens on
	published map[string]bool   // "port/proto"
}

// Run syncs on every store change until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	c.Log = c.Log.With("component", "netctl")
	c.listening = map[string]string{}
	c.published = map[string]bool{}
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
	c.syncDNS(services, byService)
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

// syncIngress publishes every ingress port of every service on this node
// and points it at the service's running tasks.
func (c *Controller) syncIngress(services []*typesv1.Service, byService map[string][]*typesv1.Task) {
	want := map[string]bool{}
	sort.Slice(services, func(i, j int) bool { return services[i].GetId() < services[j].GetId() })
	for _, svc := range services {
		for _, p := range svc.GetEndpoint().GetPorts() {
			if p.GetPublishMode() != typesv1.PortConfig_PUBLISH_MODE_INGRESS || p.GetPublishedPort() == 0 {
				continue
			}
			proto := protoName(p.GetProtocol())
			key := strconv.Itoa(int(p.GetPublishedPort())) + "/" + proto
			want[key] = true
			if !c.published[key] {
				err := c.LB.Publish(lb.PortConfig{
					Port:          uint16(p.GetPublishedPort()),
					Protocol:      proto,
					ProxyProtocol: svc.GetSpec().GetAnnotations().GetLabels()[ProxyProtocolLabel],
				})
				if err != nil {
					c.Log.Warn("publish port", "service.name", svc.GetSpec().GetAnnotations().GetName(), "port", key, "err", err)
					continue
				}
				c.published[key] = true
			}
			var backends []lb.Backend
			for _, t := range byService[svc.GetId()] {
				if !running(t) || len(t.GetNetworks()) == 0 || len(t.GetNetworks()[0].GetAddresses()) == 0 {
					continue
				}
				ip := addrIP(t.GetNetworks()[0].GetAddresses()[0])
				backends = append(backends, lb.Backend{TaskID: t.GetId(), Addr: net.JoinHostPort(ip.String(), strconv.Itoa(int(p.GetTargetPort())))})
			}
			c.LB.SetBackends(uint16(p.GetPublishedPort()), proto, backends)
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
}

// ProxyProtocolLabel on a service asks the ingress to send a PROXY protocol
// header ("v1" or "v2") before the client's bytes, so the task learns the
// client's address.
const ProxyProtocolLabel = "com.shoal.ingress.proxy-protocol"
