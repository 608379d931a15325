package netctl

import (
	"net"

	"github.com/shoal-dev/shoal/network"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// syncPeers tells each overlay network that has a bridge here where its
// tasks on other nodes are: their addresses and their nodes' underlay
// addresses (the host part of the address each node advertises).
func (c *Controller) syncPeers(tasks []*typesv1.Task) {
	nodeAddr := map[string]net.IP{}
	for id, a := range c.nodeAddrs {
		nodeAddr[id] = net.IP(a.AsSlice())
	}
	gws := c.Net.Gateways()
	peers := map[string][]network.Peer{}
	overlay := map[string]bool{}
	for _, t := range tasks {
		if t.GetStatus().GetState() >= typesv1.TaskState_TASK_STATE_COMPLETE {
			continue
		}
		node := nodeAddr[t.GetNodeId()]
		if node == nil {
			continue
		}
		for _, a := range t.GetNetworks() {
			nid := a.GetNetwork().GetId()
			if _, here := gws[nid]; !here || len(a.GetAddresses()) == 0 {
				continue
			}
			if !network.IsOverlay(a.GetNetwork()) {
				continue
			}
			overlay[nid] = true
			ip := addrIP(a.GetAddresses()[0])
			if ip == nil {
				continue
			}
			peers[nid] = append(peers[nid], network.Peer{IP: ip, Node: node})
		}
	}
	for nid := range overlay {
		if err := c.Net.SetPeers(nid, peers[nid]); err != nil {
			c.Log.Warn("overlay peers", "network.id", nid, "err", err)
		}
	}
}
