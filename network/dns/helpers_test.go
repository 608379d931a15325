package dns

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// Test addresses. Every 127.0.0.0/8 address is local on Linux, so tests
// need neither root nor interfaces; ports come from the kernel, so tests
// sharing an address do not collide.
const (
	net1IP     = "127.0.0.2"
	net2IP     = "127.0.0.3"
	upstreamIP = "127.0.0.4"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newServer starts a server on kernel-chosen ports with the given
// upstreams. With none, it reads an empty resolv.conf: a test must never
// send a query off this machine.
func newServer(t testing.TB, upstreams ...string) *Server {
	return newServerConfig(t, Config{Upstreams: upstreams})
}

func newServerConfig(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.Port = EphemeralPort
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if len(cfg.Upstreams) == 0 && cfg.ResolvConf == "" {
		cfg.ResolvConf = filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(cfg.ResolvConf, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := New(cfg)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// listen makes s answer for network on ip and returns "ip:port".
func listen(t testing.TB, s *Server, network, ip string) string {
	t.Helper()
	if err := s.Listen(network, net.ParseIP(ip)); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr(network)
	if addr == "" {
		t.Fatalf("no address for network %s after Listen", network)
	}
	return addr
}

// webRecord is the VIP service of the getstartedlab stack.
func webRecord() Record {
	return Record{
		Network: "net1",
		Names:   []string{"web", "getstartedlab_web"},
		VIP:     net.ParseIP("10.0.1.2"),
		Tasks:   ips("10.0.1.3", "10.0.1.4", "10.0.1.5"),
	}
}

// dbRecord is a dnsrr service.
func dbRecord() Record {
	return Record{
		Network: "net1",
		Names:   []string{"db", "getstartedlab_db", "database"},
		Tasks:   ips("10.0.1.7", "10.0.1.8"),
	}
}

func ips(ss ...string) []net.IP {
	out := make([]net.IP, len(ss))
	for i, s := range ss {
		out[i] = net.ParseIP(s)
	}
	return out
}

// query sends one question to addr over netw ("udp" or "tcp"). ednsSize 0
// sends no OPT record.
func query(t testing.TB, netw, addr, name string, qtype uint16, ednsSize uint16) *mdns.Msg {
	t.Helper()
	resp, err := tryQuery(netw, addr, name, qtype, ednsSize)
	if err != nil {
		t.Fatalf("query %s %s over %s to %s: %v", name, mdns.TypeToString[qtype], netw, addr, err)
	}
	return resp
}

func tryQuery(netw, addr, name string, qtype uint16, ednsSize uint16) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if ednsSize != 0 {
		m.SetEdns0(ednsSize, false)
	}
	c := &mdns.Client{Net: netw, Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(m, addr)
	if err == nil && resp.Id != m.Id {
		err = fmt.Errorf("answer id %d, query id %d", resp.Id, m.Id)
	}
	return resp, err
}

// answerIPs returns the addresses of the A and AAAA answers, in order.
func answerIPs(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			out = append(out, rr.A.String())
		case *mdns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

func sortedIPs(m *mdns.Msg) []string {
	out := answerIPs(m)
	slices.Sort(out)
	return out
}

// wantAnswer checks rcode and the set of addresses of an answer.
func wantAnswer(t testing.TB, m *mdns.Msg, rcode int, want ...string) {
	t.Helper()
	if m.Rcode != rcode {
		t.Fatalf("rcode %s, want %s\n%v", mdns.RcodeToString[m.Rcode], mdns.RcodeToString[rcode], m)
	}
	slices.Sort(want)
	if got := sortedIPs(m); !slices.Equal(got, want) {
		t.Fatalf("answer %v, want %v\n%v", got, want, m)
	}
}

// fakeUpstream is a resolver for the tests on 127.0.0.4:
//
//	example.test.   A 192.0.2.10
//	big.test.       100 A records (more than 512 bytes)
//	servfail.test.  SERVFAIL
//	anything else   NXDOMAIN
type fakeUpstream struct {
	addr     string
	udp, tcp atomic.Int32 // queries received
}

func startUpstream(t testing.TB) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(upstreamIP)})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP(upstreamIP), Port: uc.LocalAddr().(*net.UDPAddr).Port})
	if err != nil {
		uc.Close()
		t.Fatal(err)
	}
	u.addr = uc.LocalAddr().String()
	for _, srv := range []*mdns.Server{
		{PacketConn: uc, Handler: mdns.HandlerFunc(u.serve)},
		{Listener: tl, Handler: mdns.HandlerFunc(u.serve)},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return u
}

func (u *fakeUpstream) serve(w mdns.ResponseWriter, req *mdns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	if tcp {
		u.tcp.Add(1)
	} else {
		u.udp.Add(1)
	}
	m := new(mdns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	switch mdns.CanonicalName(q.Name) {
	case "example.test.":
		if q.Qtype == mdns.TypeA {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.10")})
		}
	case "big.test.":
		for i := range 100 {
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, byte(i+1))})
		}
	case "servfail.test.":
		m.Rcode = mdns.RcodeServerFailure
	default:
		m.Rcode = mdns.RcodeNameError
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(mdns.DefaultMsgSize, false)
	}
	if !tcp {
		size := mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// silentUpstream is an address that takes UDP queries and never answers,
// like a resolver behind a firewall that drops packets.
func silentUpstream(t testing.TB) string {
	t.Helper()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(upstreamIP)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	return uc.LocalAddr().String()
}

// closedUpstream is an address where nothing listens: the kernel answers
// port unreachable, as for a resolver that is not running.
func closedUpstream(t testing.TB) string {
	t.Helper()
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(upstreamIP)})
	if err != nil {
		t.Fatal(err)
	}
	addr := uc.LocalAddr().String()
	uc.Close()
	return addr
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
