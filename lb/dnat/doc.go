// Package dnat is the kernel path of shoal's service load balancing: one
// nftables table (family ip, "shoal-lb" by default) that rewrites the
// destination of a service's new connections to one of its tasks, with
// no process in between.
//
// The agent describes every frontend of the node, service VIPs and
// published ports, and calls [Manager.Sync] whenever the set of tasks
// behind one changes; [Manager.SetNodes] when the cluster's nodes
// change; [Manager.Forget] when a task leaves, or a node stops running a
// port's tasks, so that conntrack stops sending its flows there;
// [Manager.Close] on shutdown.
// A frontend without backends, local or remote, gets no rule at all: its
// packets reach the host's sockets, where the userspace proxy (package
// lb) listens and answers or refuses. So do connections to a published
// port on a loopback address, which DNAT cannot serve (the kernel drops
// routed packets with a 127.0.0.0/8 source).
//
// # The table
//
// For a VIP 10.0.1.100 of network 10.0.1.0/24 with three tasks and a TCP
// port 8080 published to task port 80 with two tasks, the table reads (nft
// notation, shortened; every rule carries the comment [Rules] reports):
//
//	map backends { type 0 : ipv4_addr   # numgen's integer; see below
//	  elements = { 0 : 10.0.1.5, 1 : 10.0.1.6, 2 : 10.0.1.7, 3 : 10.0.1.5, 4 : 10.0.2.9 }
//	}
//	chain prerouting { type nat hook prerouting priority dstnat
//	  ip daddr 10.0.1.100 ip saddr 10.0.1.0/24 meta mark set meta mark | 0x20000000 dnat to numgen inc mod 3 map @backends
//	  ip daddr != 127.0.0.0/8 fib daddr type local jump ports
//	}
//	chain output { type nat hook output priority -100
//	  ip daddr 10.0.1.100 meta mark set meta mark | 0x20000000 dnat to numgen inc mod 3 map @backends
//	  ip daddr != 127.0.0.0/8 fib daddr type local jump ports
//	}
//	chain ports {
//	  iifname "shl-br-*" tcp dport 8080 meta mark set meta mark | 0x20000000
//	  tcp dport 8080 dnat to numgen inc mod 2 offset 3 map @backends:80
//	}
//	chain postrouting { type nat hook postrouting priority srcnat
//	  meta mark & 0x20000000 != 0 meta mark set meta mark & 0xc7ffffff masquerade
//	}
//
// NAT chains see only the first packet of a connection; conntrack
// rewrites the rest, so a rule costs nothing per packet once a connection
// is up. `numgen inc` counts the connections its rule rewrites, so
// successive connections take the frontend's backends in turn; each
// frontend owns a range of the one map, starting at its offset. A
// frontend with one backend is rewritten to it directly, without numgen.
// The library cannot describe the map's key as nft's `typeof numgen`, so
// `nft list` shows its type as 0 and cannot load the listing back; the
// kernel does not care.
//
// # Masquerade: a packet mark
//
// Two kinds of connection need their source rewritten to the host:
//
//   - every VIP connection: the VIP is an address of the bridge, so a
//     task calling its own service may be sent to itself or to a neighbour
//     on the same bridge, which would answer it directly, from an address
//     the caller never called;
//   - a published-port connection that entered from a shoal bridge (a
//     task calling the node's published port: hairpin), for the same
//     reason.
//
// Any other published-port connection to a task of this node keeps its
// source: the task sees the real client's address, which Docker's
// ingress loses. The reply goes back through this host because the host
// is the task's gateway, which is why a port's Backends must be tasks
// of this node: a task on another node would answer the client through
// its own node, and the client would drop the reply. Tasks on other
// nodes are reached through their node instead (the routing mesh,
// below).
//
// Postrouting cannot tell these apart by itself: the input interface is
// gone by then, and the destination has already been rewritten. So the
// rules that choose (prerouting and output) OR a bit, 0x20000000, into
// the packet's mark, and postrouting masquerades what carries the bit and
// clears it again, as kube-proxy does with 0x4000. A packet mark rather
// than a conntrack mark: only the first packet of a connection crosses
// NAT chains, so the mark need not outlive it, and a connection's ct mark
// is more often claimed by other software (connmark save/restore). The
// other bits of the mark are kept. The bit is set before the routing
// decision, so a policy-routing rule matching it would see it; nothing in
// shoal does. Two more bits, below, ask for a masquerade that depends on
// where the connection was sent; postrouting clears all three
// (0x38000000) on every packet that carries one.
//
// # Across nodes: the routing mesh
//
// A port's Remote lists the other nodes that publish it, each with a
// weight, its number of tasks. The port then spreads new connections
// over its local tasks, one share each, and the nodes, Weight shares
// each, sent to the node's address on the same published port, where
// that node's table picks one of its own tasks. A task of this node is
// reached on the target port and a node on the published one, so these
// ports draw from a second map whose values are address and port
// (`ipv4_addr . inet_service`). With a VIP and a port as above, where
// the port also has a node 192.0.2.8 of weight 2, and SetNodes gave
// 192.0.2.7:
//
//	map endpoints { type 0 : ipv4_addr . inet_service
//	  elements = { 0 : 10.0.1.5 . 80, 1 : 10.0.2.9 . 80, 2 : 192.0.2.8 . 8080, 3 : 192.0.2.8 . 8080 }
//	}
//	set nodes { type ipv4_addr; elements = { 192.0.2.7, 192.0.2.8 } }
//	chain ports {
//	  iifname "shl-br-*" tcp dport 8080 meta mark set meta mark | 0x20000000
//	  ip saddr @nodes fib saddr type != local tcp dport 8080 dnat to numgen inc mod 2 offset 3 map @backends:80
//	  tcp dport 8080 meta mark set meta mark | 0x10000000 dnat ip to numgen inc mod 4 map @endpoints
//	}
//	chain postrouting { …
//	  meta mark & 0x10000000 != 0 ip daddr @nodes meta mark set meta mark & 0xc7ffffff masquerade
//	  meta mark & 0x18000000 != 0 meta mark set meta mark & 0xc7ffffff
//	}
//
// A connection sent to another node is masqueraded: its source becomes
// this node's address towards that node, so that the reply comes back
// here, where conntrack undoes both rewrites. The task over there sees
// this node's address, not the client's: the client's address is kept
// only for local tasks (Docker's ingress loses it always). A connection
// sent to a local task keeps its source as before, which postrouting
// tells by the destination: the bit 0x10000000 asks for a masquerade
// only if the destination is now a node. A task calling the published
// port (hairpin) is masqueraded wherever its connection goes.
//
// A connection from a node is a second hop, already sent here by that
// node's mesh: it goes to a local task, or, without one, is accepted
// untouched and meets the host's sockets (the userspace proxy, or a
// refusal). It is never sent on, so a connection crosses at most two
// nodes and never loops. The nodes are SetNodes' list and every port's
// remote nodes; the host's own connections, from a local address, are
// first hops whatever the list says.
//
// # Across nodes: VIPs
//
// A VIP's Remote lists its tasks on other nodes, reached over the
// overlay: the same L2 segment as the local tasks (package network). A
// task's connections to the VIP are spread over both. A remote task must
// see the caller's own address: masqueraded, it would come from the
// gateway .1, which the remote task reaches on its own node's bridge.
// Unmasqueraded, it answers the caller directly over the overlay, a frame
// the bridge forwards without routing; conntrack rewrites its source
// back to the VIP only if bridged frames cross netfilter, which is why
// New loads br_netfilter and sets net.bridge.bridge-nf-call-iptables=1.
// A local task still needs the masquerade (hairpin, above). So a VIP
// with remote tasks sets another bit, 0x08000000, and postrouting
// masquerades it only if the destination is a local task. If the VIP
// above had its task 10.0.1.7 on another node (Backends 10.0.1.5 and
// 10.0.1.6, Remote 10.0.1.7):
//
//	set vip_local { type ipv4_addr; elements = { 10.0.1.5, 10.0.1.6 } }
//	chain prerouting { …
//	  ip daddr 10.0.1.100 ip saddr 10.0.1.0/24 meta mark set meta mark | 0x08000000 dnat to numgen inc mod 3 map @backends
//	}
//	chain output { …
//	  ip daddr 10.0.1.100 meta mark set meta mark | 0x20000000 dnat to numgen inc mod 2 offset 3 map @backends
//	}
//	chain postrouting { …
//	  meta mark & 0x08000000 != 0 ip daddr @vip_local meta mark set meta mark & 0xc7ffffff masquerade
//	  meta mark & 0x18000000 != 0 meta mark set meta mark & 0xc7ffffff
//	}
//
// Deciding after the DNAT, by the destination, keeps one rule and one
// rotation per VIP; the price is that an address cannot be a local task
// of one VIP and a remote one of another, which Sync refuses. The host's
// own connections go to local tasks only: every node's bridge has the
// address .1, so a remote task would answer the host's masqueraded
// connection to its own node. A VIP with remote tasks only has no rule
// for the host.
//
// Without a VIP's remote tasks or a port's remote nodes, none of these
// sets and rules exist, and the table is the one above.
//
// # Replacing the table
//
// Sync sends one netlink batch that adds the table (a no-op when it
// exists), deletes it, and adds it again with all its content. The kernel
// applies a batch as one transaction: a packet sees the old table or the
// new one, never a half of either, and a batch the kernel refuses leaves
// the old table in place. Deleting the table does not touch conntrack:
// established connections keep the backend they were given, also when it
// is no longer among the backends; [Manager.Forget] ends those of a task
// that left. Input is sorted before it is turned into rules, and a Sync
// (or SetNodes) whose sorted input equals the last one applied sends
// nothing.
//
// Outside the table: the kernel must forward (net.ipv4.ip_forward=1), and
// a forward filter with a restrictive policy must accept DNATed packets
// (`ct status dnat accept`); package network does this for shoal's own.
// The remote tasks of a VIP need bridged frames to cross netfilter
// (br_netfilter), which New sees to.
package dnat
