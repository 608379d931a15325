// Package dnat is the kernel path of shoal's service load balancing: one
// nftables table (family ip, "shoal-lb" by default) that rewrites the
// destination of a service's new connections to one of its tasks, with
// no process in between.
//
// The agent describes every frontend of the node, service VIPs and
// published ports, and calls [Manager.Sync] whenever the set of tasks
// behind one changes; [Manager.Forget] when a task leaves, so that
// conntrack stops sending its flows there; [Manager.Close] on shutdown.
// A frontend without backends gets no rule at all: its packets reach the
// host's sockets, where the userspace proxy (package lb) listens and
// answers or refuses. So do connections to a published port on a
// loopback address, which DNAT cannot serve (the kernel drops routed
// packets with a 127.0.0.0/8 source).
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
//	  meta mark & 0x20000000 != 0 meta mark set meta mark & 0xdfffffff masquerade
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
// Any other published-port connection keeps its source: the task sees the
// real client's address, which Docker's ingress loses. The reply goes
// back through this host because the host is the task's gateway, which
// is why a port's backends must be tasks of this node: a task on another
// node would answer the client through its own node, and the client
// would drop the reply; for such ports the userspace proxy of package lb
// remains the path.
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
// shoal does.
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
// whose sorted input equals the last one applied sends nothing.
//
// Outside the table: the kernel must forward (net.ipv4.ip_forward=1), and
// a forward filter with a restrictive policy must accept DNATed packets
// (`ct status dnat accept`); package network does this for shoal's own.
package dnat
