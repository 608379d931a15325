package stack

import (
	"cmp"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// endpoint follows docker/cli's convertEndpointSpec. compose-go has already
// expanded the short syntax ("4000:80", "8000-8001:80-81/udp") into one
// entry per port.
func (c *converter) endpoint(s types.ServiceConfig, d *types.DeployConfig, sp tree.Path) (*typesv1.EndpointSpec, error) {
	ep := &typesv1.EndpointSpec{}
	switch d.EndpointMode {
	case "", "vip":
	case "dnsrr":
		ep.Mode = typesv1.EndpointSpec_MODE_DNSRR
	default:
		return nil, keyErrorf(sp.Next("deploy").Next("endpoint_mode"), "%q is not one of vip, dnsrr", d.EndpointMode)
	}
	pp := sp.Next("ports")
	for _, port := range s.Ports {
		pc, err := c.port(port, pp)
		if err != nil {
			return nil, err
		}
		if ep.Mode == typesv1.EndpointSpec_MODE_DNSRR && pc.PublishMode == typesv1.PortConfig_PUBLISH_MODE_INGRESS {
			// The ingress load balancer needs a virtual IP to send to.
			return nil, keyErrorf(pp, "port %d is published in ingress mode, which endpoint_mode dnsrr does not allow; publish it with mode: host", pc.TargetPort)
		}
		ep.Ports = append(ep.Ports, pc)
	}
	slices.SortFunc(ep.Ports, comparePorts)
	ep.Ports = slices.CompactFunc(ep.Ports, func(a, b *typesv1.PortConfig) bool { return comparePorts(a, b) == 0 })
	for i := 1; i < len(ep.Ports); i++ {
		a, b := ep.Ports[i-1], ep.Ports[i]
		if a.PublishedPort != 0 && a.PublishedPort == b.PublishedPort && a.Protocol == b.Protocol && a.PublishMode == b.PublishMode {
			return nil, keyErrorf(pp, "port %d/%s is published twice", a.PublishedPort, protocolName(a.Protocol))
		}
	}
	return ep, nil
}

func comparePorts(a, b *typesv1.PortConfig) int {
	return cmp.Or(
		cmp.Compare(a.PublishedPort, b.PublishedPort),
		cmp.Compare(a.TargetPort, b.TargetPort),
		cmp.Compare(a.Protocol, b.Protocol),
		cmp.Compare(a.PublishMode, b.PublishMode),
		cmp.Compare(a.Name, b.Name),
	)
}

func (c *converter) port(port types.ServicePortConfig, pp tree.Path) (*typesv1.PortConfig, error) {
	if port.Target == 0 || port.Target > 65535 {
		return nil, keyErrorf(pp, "invalid target port %d", port.Target)
	}
	pc := &typesv1.PortConfig{Name: port.Name, TargetPort: port.Target}
	switch port.Protocol {
	case "", "tcp":
	case "udp":
		pc.Protocol = typesv1.PortConfig_PROTOCOL_UDP
	case "sctp":
		pc.Protocol = typesv1.PortConfig_PROTOCOL_SCTP
	default:
		return nil, keyErrorf(pp, "protocol %q of port %d is not one of tcp, udp, sctp", port.Protocol, port.Target)
	}
	switch port.Mode {
	case "", "ingress":
	case "host":
		pc.PublishMode = typesv1.PortConfig_PUBLISH_MODE_HOST
	default:
		return nil, keyErrorf(pp, "mode %q of port %d is not one of ingress, host", port.Mode, port.Target)
	}
	if port.Published != "" {
		n, err := strconv.ParseUint(port.Published, 10, 16)
		if err != nil || n == 0 {
			if strings.Contains(port.Published, "-") {
				return nil, keyErrorf(pp, "invalid published port %q: ranges are only supported in the short syntax", port.Published)
			}
			return nil, keyErrorf(pp, "invalid published port %q", port.Published)
		}
		pc.PublishedPort = uint32(n)
	}
	if port.HostIP != "" {
		// Docker's ConvertPortToPortConfig ignores the address with this
		// warning: a published port listens on every address of every node.
		if ip := net.ParseIP(port.HostIP); ip == nil || !ip.IsUnspecified() {
			c.notes.warnf("Ignoring IP-address (%s:%s) of %s: a service can only listen on 0.0.0.0", port.HostIP, port.Published, pp)
		}
	}
	return pc, nil
}

func protocolName(p typesv1.PortConfig_Protocol) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PROTOCOL_"))
}
