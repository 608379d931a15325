// Package dns is a node's DNS server for service discovery.
//
// Every container's resolv.conf says `nameserver <gateway>`, the address
// of its network's bridge on this node, and the server listens (UDP and
// TCP) on one such address per network. The address a query arrives on
// names the network, so a container sees the services of the networks it
// is attached to and nothing else, without the server having to know
// which container asked.
//
// The agent pushes the records of each network with SetRecords. Per
// network:
//
//   - `web`, `getstartedlab_web` and the network aliases of a service
//     answer the service's VIP (endpoint_mode vip) or the IPs of its
//     RUNNING tasks (endpoint_mode dnsrr);
//   - `tasks.<name>` answers the task IPs in both modes;
//   - every other name goes to the host's resolvers (the upstreams), as
//     Docker's embedded resolver does.
//
// Names match case-insensitively and exactly: the containers' resolv.conf
// has no search domains, so the server never strips one.
package dns
