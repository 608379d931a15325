// Package lb is shoal's ingress load balancer: on every node, one listener
// per published port (TCP and UDP) that spreads new connections over the
// RUNNING tasks of the service, wherever they run in the cluster.
//
// The agent drives it with four calls: [Balancer.Publish] when a port must
// answer on this node, [Balancer.SetBackends] whenever the set of RUNNING
// tasks behind a port changes, [Balancer.Drain] the moment a task is told
// to stop (before its container gets the stop signal), and
// [Balancer.Unpublish] when the port goes away.
//
// # A userspace proxy, not a kernel path (for now)
//
// The balancer accepts each connection and dials a task itself, instead of
// rewriting packets with nftables DNAT or IPVS. Two promises of the issue
// need a proxy that sees the connect:
//
//   - Skip a refusing backend: with DNAT the client's own SYN reaches the
//     dead task and the client gets the RST. A proxy dials on the client's
//     behalf, sees ECONNREFUSED or a timeout, puts that backend aside for
//     a moment and dials the next one; the client sees an error only when
//     every task failed.
//   - Drain before stop: with DNAT a conntrack entry created a microsecond
//     before the rule change still leads to the old task. The proxy counts
//     its dials in progress, and [Balancer.Drain] returns only when none is
//     left towards the drained task, so that once it returns no new
//     connection can reach it and the agent may send the stop signal.
//
// The cost is a second TCP connection per client connection and the
// copying. Accepting, picking, dialing and the PROXY header are plain Go,
// a goroutine per new connection; once both connections are up, their
// sockets go to a few epoll event loops (copy.go says why not io.Copy)
// that copy with read/write, two system calls per message as in nginx,
// and hold nothing for an idle connection but its two sockets. A kernel
// fast path (nftables DNAT, or sockmap redirection under this same
// control path) may come later.
//
// # Spreading: least connections, round-robin tie-break
//
// Each new connection goes to the backend with the fewest connections open
// through this node's balancer (dials in progress count), and among equals
// to the next one in round-robin order. Why not plain round robin: tasks of
// one service differ in speed (another node over VXLAN, a busy node, a task
// still warming up), and connections differ in length (keep-alive HTTP,
// WebSockets, database sessions). Round robin hands every task the same
// number of connections however long they stay, so a slow task piles them
// up; least connections sends new ones where connections finish. With short
// connections all counts are 0 most of the time and the tie-break makes it
// round robin, so a burst of requests is spread evenly too. The counts are
// this node's own, so nodes need no coordination.
//
// A backend whose dial is refused or times out (1 s) is skipped for 1 s;
// if every backend is in that state the balancer still tries them (the
// oldest failure first), since refusing a client outright is worse than a
// dial that might now work.
//
// # The client's address
//
// Docker's ingress SNATs connections inside its ingress sandbox, so tasks
// see the sandbox's address instead of the client's (moby/moby#25526,
// open since 2016). Here a task sees the node's address too, because the
// connection is the balancer's; instead each port can carry the PROXY
// protocol (PortConfig.ProxyProtocol "v1" or "v2", HAProxy's format, read
// by nginx, HAProxy, Traefik, Envoy and most proxies and servers): the
// balancer writes a header with the client's address and port before the
// client's first byte. For UDP, "v2" prefixes every datagram with the
// header, since datagrams of one flow may be lost or reordered. A kernel
// path that keeps the source address (DNAT without SNAT) only works when
// the reply comes back through the same node, which is not the case for a
// task on another node with its own default route; the PROXY protocol
// works wherever the task runs, so it is the documented choice.
//
// # UDP
//
// UDP has no connections; the balancer keeps a flow per client address and
// port, with its own socket connected to one backend, forgotten after 30 s
// without a datagram either way. Replies leave from the published port and
// from the very address the client wrote to (IP_PKTINFO), so a client with
// a connected socket accepts them on a node with several addresses. A
// refused backend (ICMP port unreachable) ends its flows and is skipped for
// a while; the client's next datagram starts a flow to another task.
//
// # Mode host
//
// A port published in mode host answers only on nodes that run a task of
// the service, and only with that node's tasks: the agent calls Publish
// when the first such task starts (with ListenAddr if the service asks for
// one), SetBackends with the local tasks only, and Unpublish when the last
// one stops. A port already taken on the node, by another shoal service or
// another program, fails Publish with a [*PortInUseError] naming the port,
// which the agent reports as the task's error.
package lb
