package netctl

import (
	"context"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/lb/dnat"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Kernel is the kernel path of load balancing (lb/dnat): published ports
// and service VIPs as nftables DNAT, so that connections from other hosts
// and from tasks never pass through a userspace proxy and keep their
// source address. The userspace balancer (LB) still holds every published
// port: it answers on loopback, which DNAT cannot serve, and serves ports
// that ask for a PROXY protocol header.
type Kernel interface {
	Sync(vips []dnat.VIP, ports []dnat.Port) error
	SetNodes(nodes []netip.Addr) error
	Forget(addr netip.Addr) error
}

// Probing of new backends: a task is RUNNING once its process started,
// which is before it listens. The kernel cannot skip a backend that
// refuses (the userspace proxy does), so a task joins a port's kernel
// rotation only after it accepted one connection on it.
const (
	probeInterval = 10 * time.Millisecond
	probeTimeout  = 200 * time.Millisecond
)

// kernelState is the part of the controller the kernel path keeps; its
// mutex is taken by the sync loop and by Drain, which the agent calls.
type kernelState struct {
	mu      sync.Mutex
	fronts  []*frontend
	vips    []vipFront
	drained map[string]time.Time // task id → when
	ready   map[string]bool      // probeKey → accepted a connection
	probing map[string]context.CancelFunc
	wg      sync.WaitGroup
	nodes   []netip.Addr // the cluster's node addresses, sorted
}

type vipFront struct {
	name   string
	addr   netip.Addr
	source netip.Prefix
	ids    []string // local tasks
	ips    []netip.Addr
	remote []netip.Addr // tasks on other nodes, over the overlay
}

func probeKey(taskID string, addr string) string { return taskID + "@" + addr }

// computeVIPs collects the VIPs of services on networks that have a bridge
// here, puts them on the bridges, and keeps them for the kernel path.
func (c *Controller) computeVIPs(services []*typesv1.Service, byService map[string][]*typesv1.Task) {
	gws := c.Net.Gateways()
	onBridge := map[string][]net.IP{}
	var vips []vipFront
	for _, svc := range services {
		if svc.GetSpec().GetEndpoint().GetMode() == typesv1.EndpointSpec_MODE_DNSRR {
			continue
		}
		for _, v := range svc.GetEndpoint().GetVirtualIps() {
			nid := v.GetNetworkId()
			if _, ok := gws[nid]; !ok {
				continue
			}
			p, err := netip.ParsePrefix(v.GetAddr())
			if err != nil || !p.Addr().Is4() {
				continue
			}
			onBridge[nid] = append(onBridge[nid], net.IP(p.Addr().AsSlice()))
			vf := vipFront{name: svc.GetSpec().GetAnnotations().GetName(), addr: p.Addr(), source: p.Masked()}
			for _, t := range byService[svc.GetId()] {
				if !running(t) {
					continue
				}
				for _, a := range t.GetNetworks() {
					if a.GetNetwork().GetId() != nid || len(a.GetAddresses()) == 0 {
						continue
					}
					ap, err := netip.ParsePrefix(a.GetAddresses()[0])
					if err != nil {
						continue
					}
					if t.GetNodeId() == c.NodeID {
						vf.ids = append(vf.ids, t.GetId())
						vf.ips = append(vf.ips, ap.Addr())
					} else {
						vf.remote = append(vf.remote, ap.Addr())
					}
				}
			}
			vips = append(vips, vf)
		}
	}
	if err := c.Net.SetVIPs(onBridge); err != nil {
		c.Log.Warn("service VIPs on bridges", "err", err)
	}
	sort.Slice(vips, func(i, j int) bool { return vips[i].addr.Less(vips[j].addr) })
	c.k.mu.Lock()
	c.k.vips = vips
	c.k.mu.Unlock()
}

// syncKernel hands the last sync's frontends to the kernel balancer.
func (c *Controller) syncKernel() {
	if c.Kernel == nil {
		return
	}
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	c.syncKernelLocked()
}

func (c *Controller) syncKernelLocked() {
	k := &c.k
	if k.drained == nil {
		k.drained = map[string]time.Time{}
		k.ready = map[string]bool{}
		k.probing = map[string]context.CancelFunc{}
	}
	for id, at := range k.drained {
		if time.Since(at) > 10*time.Minute {
			delete(k.drained, id)
		}
	}
	wanted := map[string]bool{}
	var ports []dnat.Port
	for _, f := range k.fronts {
		if f.proxy != "" {
			continue // the userspace proxy writes the header
		}
		p := dnat.Port{Name: f.name, Port: f.port, Proto: f.proto, Target: f.target}
		for a, w := range f.remote {
			p.Remote = append(p.Remote, dnat.Remote{Node: a, Weight: w})
		}
		for i, id := range f.ids {
			if _, gone := k.drained[id]; gone {
				continue
			}
			if f.proto == "tcp" {
				key := probeKey(id, f.backends[i].Addr)
				wanted[key] = true
				if !k.ready[key] {
					c.probeLocked(key, f.backends[i].Addr)
					continue
				}
			}
			p.Backends = append(p.Backends, f.ips[i])
		}
		ports = append(ports, p)
	}
	var vips []dnat.VIP
	for _, v := range k.vips {
		d := dnat.VIP{Name: v.name, Addr: v.addr, Source: v.source, Remote: v.remote}
		for i, id := range v.ids {
			if _, gone := k.drained[id]; !gone {
				d.Backends = append(d.Backends, v.ips[i])
			}
		}
		vips = append(vips, d)
	}
	for key, cancel := range k.probing {
		if !wanted[key] {
			cancel()
			delete(k.probing, key)
		}
	}
	for key := range k.ready {
		if !wanted[key] {
			delete(k.ready, key)
		}
	}
	if err := c.Kernel.SetNodes(k.nodes); err != nil {
		c.Log.Warn("kernel load balancer nodes", "err", err)
	}
	if err := c.Kernel.Sync(vips, ports); err != nil {
		c.Log.Warn("kernel load balancer", "err", err)
	}
}

// probeLocked starts a probe of addr unless one runs: it dials until the
// task accepts, then marks it ready and syncs again.
func (c *Controller) probeLocked(key, addr string) {
	k := &c.k
	if _, ok := k.probing[key]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	k.probing[key] = cancel
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		d := net.Dialer{Timeout: probeTimeout}
		for ctx.Err() == nil {
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				conn.Close()
				k.mu.Lock()
				if _, still := k.probing[key]; still {
					delete(k.probing, key)
					k.ready[key] = true
					c.syncKernelLocked()
				}
				k.mu.Unlock()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(probeInterval):
			}
		}
	}()
}

// Drain takes task taskID out of every rotation at once, before its
// container gets the stop signal: the userspace proxy's and the kernel's.
// Established connections go on.
func (c *Controller) Drain(taskID string) {
	c.LB.Drain(taskID)
	if c.Kernel == nil {
		return
	}
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	if c.k.drained == nil {
		c.syncKernelLocked() // makes the maps
	}
	c.k.drained[taskID] = time.Now()
	c.syncKernelLocked()
}

// TaskRemoved releases what task t held on this node once its container
// is gone: its mode host ports, and the kernel's connection tracking
// entries towards its address (so UDP flows move to another task now,
// not when their entries time out).
func (c *Controller) TaskRemoved(t *typesv1.Task) {
	c.ReleaseHost(t.GetId())
	if c.Kernel == nil {
		return
	}
	for _, a := range t.GetNetworks() {
		for _, s := range a.GetAddresses() {
			if p, err := netip.ParsePrefix(s); err == nil {
				if err := c.Kernel.Forget(p.Addr()); err != nil {
					c.Log.Warn("forget connections", "task.id", t.GetId(), "addr", p.Addr(), "err", err)
				}
			}
		}
	}
}

// stopProbes ends the probes; Run calls it on return.
func (c *Controller) stopProbes() {
	c.k.mu.Lock()
	for key, cancel := range c.k.probing {
		cancel()
		delete(c.k.probing, key)
	}
	c.k.mu.Unlock()
	c.k.wg.Wait()
}
