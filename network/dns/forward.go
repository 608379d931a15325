package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// DefaultForwardTimeout bounds a forwarded query over all upstreams. It
// is well below the 5 s that glibc and musl wait for an answer, so that a
// container whose upstreams are down gets SERVFAIL from us, and a clear
// error, rather than timing out and retrying into the same wall.
const DefaultForwardTimeout = 2 * time.Second

// DefaultResolvConf is where the host's resolvers are read from when
// Config.Upstreams is empty.
const DefaultResolvConf = "/etc/resolv.conf"

// maxForwards bounds the forwarded queries in flight per network. A
// container that floods the server with names that go upstream would
// otherwise hold a goroutine and a socket each for up to the forward
// timeout; past the bound it gets SERVFAIL at once, and containers on
// other networks are not starved.
const maxForwards = 100

// errNoUpstream is returned when no upstream is configured or usable.
var errNoUpstream = errors.New("no upstream resolver")

// forwarder sends the queries the server cannot answer to the upstreams.
type forwarder struct {
	upstreams []string // "ip:port"
	timeout   time.Duration
	// self reports whether an address is one the server itself listens
	// on: forwarding there would loop until the timeout.
	self func(addr string) bool
}

// forward asks the upstreams in turn until one gives an answer that is not
// SERVFAIL or REFUSED (Docker goes on to the next upstream for those too:
// another resolver may well know). Each upstream gets an equal share of
// what is left of the timeout, so that one that is down cannot use up the
// time of those after it. A truncated UDP answer is asked again over TCP.
// When no upstream answers well, the last answer that came back is
// returned, or an error when none did.
func (f *forwarder) forward(ctx context.Context, req *mdns.Msg) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	// A fresh random id rather than the container's, which may be
	// predictable, makes a spoofed upstream answer harder to slip in.
	q := req.Copy()
	q.Id = mdns.Id()

	var last *mdns.Msg
	errs := []error{}
	ups := make([]string, 0, len(f.upstreams))
	for _, up := range f.upstreams {
		if f.self != nil && f.self(up) {
			continue
		}
		ups = append(ups, up)
	}
	if len(ups) == 0 {
		return nil, errNoUpstream
	}
	for i, up := range ups {
		share := time.Until(deadline) / time.Duration(len(ups)-i)
		if share <= 0 {
			break
		}
		resp, err := f.attempt(ctx, up, q, share)
		if err != nil {
			errs = append(errs, fmt.Errorf("upstream %s: %w", up, err))
			continue
		}
		resp.Id = req.Id
		if resp.Rcode == mdns.RcodeServerFailure || resp.Rcode == mdns.RcodeRefused {
			last = resp
			errs = append(errs, fmt.Errorf("upstream %s: %s", up, mdns.RcodeToString[resp.Rcode]))
			continue
		}
		return resp, nil
	}
	if last != nil {
		return last, nil
	}
	if ctx.Err() != nil && len(errs) < len(ups) {
		errs = append(errs, ctx.Err())
	}
	return nil, errors.Join(errs...)
}

// attempt asks one upstream over UDP, then over TCP if the answer was
// truncated, within share.
func (f *forwarder) attempt(ctx context.Context, up string, q *mdns.Msg, share time.Duration) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, share)
	defer cancel()
	resp, err := exchange(ctx, "udp", up, q)
	if err != nil {
		return nil, err
	}
	if !resp.Truncated {
		return resp, nil
	}
	full, err := exchange(ctx, "tcp", up, q)
	if err != nil {
		// The truncated answer is still an answer: the client sees TC and
		// may come back over TCP itself.
		return resp, nil
	}
	return full, nil
}

// exchange sends q to addr over netw ("udp" or "tcp") and reads the answer.
// miekg/dns only takes the deadline from ctx, so cancelling ctx (when the
// network is unlistened or the server closed) closes the connection to end
// the read at once.
func exchange(ctx context.Context, netw, addr string, q *mdns.Msg) (*mdns.Msg, error) {
	c := &mdns.Client{
		Net: netw,
		// Read buffer for an answer to a query without EDNS0: some
		// servers send more than 512 bytes anyway, and reading those
		// into a 512-byte buffer fails to unpack.
		UDPSize: mdns.DefaultMsgSize,
	}
	co, err := c.DialContext(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, q, co)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// upstreamsFrom returns the upstreams of cfg as "ip:port": cfg.Upstreams,
// or the nameservers of the resolv.conf file when there are none. The
// server runs on the host, so a resolver on the host's loopback
// (systemd-resolved's 127.0.0.53) is reachable and kept as it is. Entries
// that are not IP addresses are returned as problems: a name would need a
// resolver to find the resolver.
func upstreamsFrom(cfg Config) (ups []string, problems []string) {
	list := cfg.Upstreams
	port := "53"
	if len(list) == 0 {
		path := cfg.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		cc, err := mdns.ClientConfigFromFile(path)
		if err != nil {
			return nil, []string{err.Error()} // names the file already
		}
		list, port = cc.Servers, cc.Port
	}
	for _, s := range list {
		up, err := normalizeUpstream(s, port)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		ups = append(ups, up)
	}
	return ups, problems
}

// normalizeUpstream turns "ip", "ip:port", "[ipv6]:port", "ipv6" or
// "ipv6%zone" into "ip:port", with defPort when none is given.
func normalizeUpstream(s, defPort string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), defPort
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("upstream %q: not an IP address", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Errorf("upstream %q: bad port %q", s, port)
	}
	// The canonical form is what the server compares with its own
	// listening addresses to avoid forwarding to itself.
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)).String(), nil
}
