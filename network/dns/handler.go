package dns

import (
	"net"
	"time"

	mdns "github.com/miekg/dns"
)

// forwardWarnEvery spaces the warnings about failed forwards: a container
// retrying a name while the upstreams are down would otherwise fill the
// log. The ones in between go to the debug level.
const forwardWarnEvery = time.Minute

// handler answers the queries that arrive on one network's listener.
type handler struct {
	s *Server
	n *netState
	l *listener
}

var _ mdns.Handler = (*handler)(nil)

// ServeDNS answers a service name of the network from its records and
// forwards everything else. miekg/dns has already checked that req is a
// query with exactly one question (acceptQuery).
func (h *handler) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	q := req.Question[0]
	var resp *mdns.Msg
	if q.Qclass == mdns.ClassINET || q.Qclass == mdns.ClassANY {
		if e := h.n.records.Load().lookup(q.Name); e != nil {
			resp = localAnswer(req, e)
		}
	}
	if resp == nil {
		resp = h.forward(req)
	}
	h.write(w, req, resp)
}

// localAnswer answers a name the network knows. A known name never goes
// upstream, even for a type it has no data for (AAAA of a service with an
// IPv4 VIP, or A of a dnsrr service with no running task): the empty
// NOERROR says the name exists, and an upstream could resolve the same
// short name to some other host (search domains, LLMNR), which is worse
// than no answer.
func localAnswer(req *mdns.Msg, e *entry) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(mdns.DefaultMsgSize, false)
		if opt.Version() != 0 {
			m.Rcode = mdns.RcodeBadVers // RFC 6891 6.1.3; needs the OPT just added
			return m
		}
	}
	m.Answer = e.answer(req.Question[0])
	return m
}

// forward asks the upstreams, or answers SERVFAIL when none answers, when
// the network has too many forwards in flight, or when the listener stops.
func (h *handler) forward(req *mdns.Msg) *mdns.Msg {
	select {
	case h.l.sem <- struct{}{}:
		defer func() { <-h.l.sem }()
	default:
		h.s.warnForward("too many forwarded queries in flight", h.n.id, req, nil)
		return serverFailure(req)
	}
	resp, err := h.s.fwd.forward(h.l.ctx, req)
	if err != nil {
		if h.l.ctx.Err() == nil {
			h.s.warnForward("no upstream answered", h.n.id, req, err)
		}
		return serverFailure(req)
	}
	return resp
}

// write sends resp, cut to what the client can take over UDP (512 bytes,
// or its EDNS0 buffer size) with the TC bit set when it had to be cut, so
// that the client asks again over TCP.
func (h *handler) write(w mdns.ResponseWriter, req, resp *mdns.Msg) {
	size := mdns.MaxMsgSize
	if _, tcp := w.RemoteAddr().(*net.TCPAddr); !tcp {
		size = mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), mdns.MinMsgSize)
		}
	}
	resp.Truncate(size)
	if err := w.WriteMsg(resp); err != nil {
		h.s.log.Debug("write answer", "network.id", h.n.id, "client", w.RemoteAddr(), "err", err)
	}
}

// serverFailure is SERVFAIL for req.
func serverFailure(req *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	m.RecursionAvailable = true
	if req.IsEdns0() != nil {
		m.SetEdns0(mdns.DefaultMsgSize, false)
	}
	return m
}

// warnForward logs a failed forward: as a warning at most once per
// forwardWarnEvery, at the debug level otherwise.
func (s *Server) warnForward(msg, network string, req *mdns.Msg, err error) {
	args := []any{"network.id", network, "name", req.Question[0].Name, "type", mdns.TypeToString[req.Question[0].Qtype]}
	if err != nil {
		args = append(args, "err", err)
	}
	now := time.Now().UnixNano()
	last := s.lastForwardWarn.Load()
	if now-last >= int64(forwardWarnEvery) && s.lastForwardWarn.CompareAndSwap(last, now) {
		s.log.Warn(msg, args...)
		return
	}
	s.log.Debug(msg, args...)
}
