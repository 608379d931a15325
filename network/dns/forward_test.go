package dns

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestForward: names the network does not know are answered by the
// upstream, to the client's query id, over UDP and TCP.
func TestForward(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)
	s.SetRecords("net1", []Record{webRecord()})

	for _, netw := range []string{"udp", "tcp"} {
		wantAnswer(t, query(t, netw, addr, "example.test.", mdns.TypeA, 0), mdns.RcodeSuccess, "192.0.2.10")
		wantAnswer(t, query(t, netw, addr, "nowhere.test.", mdns.TypeA, 0), mdns.RcodeNameError)
	}
	// Classes other than IN are never service names.
	m := new(mdns.Msg).SetQuestion("web.", mdns.TypeA)
	m.Question[0].Qclass = mdns.ClassCHAOS
	before := up.udp.Load()
	if _, _, err := (&mdns.Client{Timeout: 5 * time.Second}).Exchange(m, addr); err != nil {
		t.Fatal(err)
	}
	if up.udp.Load() == before {
		t.Error("a CHAOS query for a service name was answered locally")
	}
}

// TestForwardTruncatedAnswer: an upstream answer too big for UDP is fetched
// again over TCP; the client gets what it can take, with TC when cut.
func TestForwardTruncatedAnswer(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)

	var all []string
	for i := range 100 {
		all = append(all, "198.51.100."+strconv.Itoa(i+1))
	}

	m := query(t, "udp", addr, "big.test.", mdns.TypeA, 0)
	m.Compress = true // as sent
	if !m.Truncated || m.Len() > mdns.MinMsgSize {
		t.Errorf("plain UDP client: truncated %v, %d bytes; want TC within 512", m.Truncated, m.Len())
	}
	if up.tcp.Load() == 0 {
		t.Error("the upstream's truncated answer was not asked again over TCP")
	}
	wantAnswer(t, query(t, "tcp", addr, "big.test.", mdns.TypeA, 0), mdns.RcodeSuccess, all...)
	m = query(t, "udp", addr, "big.test.", mdns.TypeA, 4096)
	if m.Truncated {
		t.Error("EDNS0 4096 answer truncated")
	}
	wantAnswer(t, m, mdns.RcodeSuccess, all...)
}

// TestUpstreamDown: with no upstream able to answer, the client gets
// SERVFAIL within the forward timeout (2 s by default), before its own
// resolver gives up.
func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		upstream func(t testing.TB) string
		within   time.Duration
	}{
		// Port unreachable comes back at once.
		{"refused", closedUpstream, time.Second},
		// Packets dropped: the whole default timeout.
		{"silent", silentUpstream, DefaultForwardTimeout + 500*time.Millisecond},
		{"servfail", func(t testing.TB) string { return startUpstream(t).addr }, time.Second},
		{"none", func(testing.TB) string { return "" }, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var s *Server
			if up := tt.upstream(t); up != "" {
				s = newServer(t, up)
			} else {
				s = newServer(t)
			}
			addr := listen(t, s, "net1", net1IP)
			for _, netw := range []string{"udp", "tcp"} {
				start := time.Now()
				name := "example.test."
				if tt.name == "servfail" {
					name = "servfail.test."
				}
				m := query(t, netw, addr, name, mdns.TypeA, 0)
				took := time.Since(start)
				wantAnswer(t, m, mdns.RcodeServerFailure)
				if took > tt.within {
					t.Errorf("%s: SERVFAIL after %v, want within %v", netw, took, tt.within)
				}
			}
		})
	}
}

// TestUpstreamFailover: an upstream that is down or fails does not stop
// the next one from answering, and a silent one only takes its share of
// the timeout.
func TestUpstreamFailover(t *testing.T) {
	t.Parallel()
	good := startUpstream(t)
	s := newServerConfig(t, Config{
		Upstreams:      []string{closedUpstream(t), silentUpstream(t), good.addr},
		ForwardTimeout: 900 * time.Millisecond,
	})
	addr := listen(t, s, "net1", net1IP)
	start := time.Now()
	wantAnswer(t, query(t, "udp", addr, "example.test.", mdns.TypeA, 0), mdns.RcodeSuccess, "192.0.2.10")
	if took := time.Since(start); took > 900*time.Millisecond {
		t.Errorf("answer after %v", took)
	}

	// An upstream's SERVFAIL is not the last word either.
	failing := startUpstream(t)
	s2 := newServerConfig(t, Config{Upstreams: []string{failing.addr, good.addr}})
	addr2 := listen(t, s2, "net1", net1IP)
	m := query(t, "udp", addr2, "servfail.test.", mdns.TypeA, 0)
	wantAnswer(t, m, mdns.RcodeServerFailure)
	if failing.udp.Load() != 1 || good.udp.Load() == 0 {
		t.Errorf("queries: failing %d, next %d; want both asked", failing.udp.Load(), good.udp.Load())
	}
}

// TestForwardNotToSelf: an upstream that is one of the server's own
// addresses (a host whose resolv.conf points at a bridge gateway) is
// skipped rather than looped through until the timeout.
func TestForwardNotToSelf(t *testing.T) {
	t.Parallel()
	// The port must be known before New: take one the kernel gives and
	// free it.
	addr := closedUpstream(t)
	_, port, _ := net.SplitHostPort(addr)
	addr = net.JoinHostPort(net1IP, port)
	s := newServerConfig(t, Config{Upstreams: []string{addr}})
	s.port = mustAtoi(t, port)
	listen(t, s, "net1", net1IP)
	start := time.Now()
	wantAnswer(t, query(t, "udp", addr, "example.test.", mdns.TypeA, 0), mdns.RcodeServerFailure)
	if took := time.Since(start); took > time.Second {
		t.Errorf("SERVFAIL after %v", took)
	}
	// The query must not have been sent at all (the bound on forwards in
	// flight would also end a loop quickly, after a hundred of them).
	q := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
	if _, err := s.fwd.forward(t.Context(), q); !errors.Is(err, errNoUpstream) {
		t.Errorf("forward to self: %v, want errNoUpstream", err)
	}
}

// TestForwardLimit: past maxForwards in flight on a network, forwards
// fail at once instead of piling up.
func TestForwardLimit(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)
	s.SetRecords("net1", []Record{webRecord()})
	s.mu.Lock()
	l := s.nets["net1"].l
	s.mu.Unlock()
	for range maxForwards {
		l.sem <- struct{}{}
	}
	wantAnswer(t, query(t, "udp", addr, "example.test.", mdns.TypeA, 0), mdns.RcodeServerFailure)
	wantAnswer(t, query(t, "udp", addr, "web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.2") // local names unaffected
	for range maxForwards {
		<-l.sem
	}
	wantAnswer(t, query(t, "udp", addr, "example.test.", mdns.TypeA, 0), mdns.RcodeSuccess, "192.0.2.10")
}

// TestUnlistenAbortsForwards: a forward waiting on a silent upstream does
// not hold Unlisten for the forward timeout.
func TestUnlistenAbortsForwards(t *testing.T) {
	t.Parallel()
	up := silentUpstream(t)
	s := newServerConfig(t, Config{Upstreams: []string{up}, ForwardTimeout: 10 * time.Second})
	addr := listen(t, s, "net1", net1IP)
	s.mu.Lock()
	l := s.nets["net1"].l
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		defer close(done)
		tryQuery("udp", addr, "example.test.", mdns.TypeA, 0) // fails one way or another
	}()
	// Wait for the forward to be in flight.
	deadline := time.Now().Add(5 * time.Second)
	for len(l.sem) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the query never reached the forwarder")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := s.Unlisten("net1"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Unlisten took %v", took)
	}
	<-done
}

func TestNormalizeUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "10.0.0.1", want: "10.0.0.1:53"},
		{in: "10.0.0.1:5353", want: "10.0.0.1:5353"},
		{in: "127.0.0.53", want: "127.0.0.53:53"},
		{in: "::1", want: "[::1]:53"},
		{in: "[::1]", want: "[::1]:53"},
		{in: "[2001:db8::1]:54", want: "[2001:db8::1]:54"},
		{in: "fe80::1%eth0", want: "[fe80::1%eth0]:53"},
		{in: "::ffff:10.0.0.1", want: "10.0.0.1:53"},
		{in: "dns.example", bad: true},
		{in: "10.0.0.1:0", bad: true},
		{in: "10.0.0.1:99999", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		got, err := normalizeUpstream(tt.in, "53")
		if tt.bad {
			if err == nil {
				t.Errorf("normalizeUpstream(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizeUpstream(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestUpstreamsFrom(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	content := "# by systemd-resolved\nnameserver 127.0.0.53\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0 trust-ad\nsearch corp.example\n"
	if err := os.WriteFile(conf, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	ups, problems := upstreamsFrom(Config{ResolvConf: conf})
	if want := []string{"127.0.0.53:53", "[::1]:53", "[fe80::1%eth0]:53"}; !slices.Equal(ups, want) {
		t.Errorf("upstreams %v, want %v (loopback resolvers kept: the server runs on the host)", ups, want)
	}
	if len(problems) != 1 {
		t.Errorf("problems %v, want one for %q", problems, "bogus")
	}

	ups, _ = upstreamsFrom(Config{ResolvConf: conf, Upstreams: []string{"127.0.0.4:5300"}})
	if !slices.Equal(ups, []string{"127.0.0.4:5300"}) {
		t.Errorf("explicit upstreams %v", ups)
	}

	ups, problems = upstreamsFrom(Config{ResolvConf: filepath.Join(dir, "missing")})
	if len(ups) != 0 || len(problems) != 1 {
		t.Errorf("missing file: upstreams %v, problems %v", ups, problems)
	}
}
