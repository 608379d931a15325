package dns

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestNamesResolveOnlyOnTheirNetwork: net1 has the web service, net2 does
// not; a query arriving on net2's address must not see it and goes to the
// upstream like any unknown name.
func TestNamesResolveOnlyOnTheirNetwork(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr1 := listen(t, s, "net1", net1IP)
	addr2 := listen(t, s, "net2", net2IP)
	s.SetRecords("net1", []Record{webRecord(), dbRecord()})
	s.SetRecords("net2", []Record{{Names: []string{"other"}, VIP: net.ParseIP("10.0.2.2")}})

	tests := []struct {
		name  string
		addr  string
		rcode int
		want  []string
		ttl   uint32
	}{
		{"web.", addr1, mdns.RcodeSuccess, []string{"10.0.1.2"}, vipTTL},
		{"getstartedlab_web.", addr1, mdns.RcodeSuccess, []string{"10.0.1.2"}, vipTTL},
		{"WeB.", addr1, mdns.RcodeSuccess, []string{"10.0.1.2"}, vipTTL},
		{"GetStartedLab_Web.", addr1, mdns.RcodeSuccess, []string{"10.0.1.2"}, vipTTL},
		{"tasks.web.", addr1, mdns.RcodeSuccess, []string{"10.0.1.3", "10.0.1.4", "10.0.1.5"}, taskTTL},
		{"tasks.getstartedlab_web.", addr1, mdns.RcodeSuccess, []string{"10.0.1.3", "10.0.1.4", "10.0.1.5"}, taskTTL},
		{"db.", addr1, mdns.RcodeSuccess, []string{"10.0.1.7", "10.0.1.8"}, taskTTL},
		{"database.", addr1, mdns.RcodeSuccess, []string{"10.0.1.7", "10.0.1.8"}, taskTTL},
		{"tasks.db.", addr1, mdns.RcodeSuccess, []string{"10.0.1.7", "10.0.1.8"}, taskTTL},
		{"other.", addr1, mdns.RcodeNameError, nil, 0},
		// net2: the service is not attached there.
		{"web.", addr2, mdns.RcodeNameError, nil, 0},
		{"getstartedlab_web.", addr2, mdns.RcodeNameError, nil, 0},
		{"tasks.web.", addr2, mdns.RcodeNameError, nil, 0},
		{"db.", addr2, mdns.RcodeNameError, nil, 0},
		{"other.", addr2, mdns.RcodeSuccess, []string{"10.0.2.2"}, vipTTL},
		// Exact names only: no search domain is stripped.
		{"web.example.", addr1, mdns.RcodeNameError, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name+"@"+tt.addr, func(t *testing.T) {
			before := up.udp.Load()
			m := query(t, "udp", tt.addr, tt.name, mdns.TypeA, 0)
			wantAnswer(t, m, tt.rcode, tt.want...)
			forwarded := up.udp.Load() != before
			if local := tt.want != nil; local {
				if forwarded {
					t.Error("a known name was forwarded upstream")
				}
				if !m.Authoritative || !m.RecursionAvailable {
					t.Errorf("AA %v RA %v, want both", m.Authoritative, m.RecursionAvailable)
				}
				for _, rr := range m.Answer {
					if rr.Header().Ttl != tt.ttl {
						t.Errorf("TTL %d, want %d", rr.Header().Ttl, tt.ttl)
					}
					if rr.Header().Name != tt.name {
						t.Errorf("answer for %q, want the question's spelling %q", rr.Header().Name, tt.name)
					}
				}
			} else if !forwarded {
				t.Error("an unknown name was not forwarded upstream")
			}
		})
	}
}

// TestTCP: the same answers over TCP, on a connection that carries several
// queries.
func TestTCP(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)
	s.SetRecords("net1", []Record{webRecord()})

	wantAnswer(t, query(t, "tcp", addr, "web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.2")
	wantAnswer(t, query(t, "tcp", addr, "tasks.web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.3", "10.0.1.4", "10.0.1.5")
	wantAnswer(t, query(t, "tcp", addr, "example.test.", mdns.TypeA, 0), mdns.RcodeSuccess, "192.0.2.10")

	c := &mdns.Client{Net: "tcp", Timeout: 5 * time.Second}
	conn, err := c.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 3 {
		m := new(mdns.Msg).SetQuestion("getstartedlab_web.", mdns.TypeA)
		resp, _, err := c.ExchangeWithConn(m, conn)
		if err != nil {
			t.Fatal(err)
		}
		wantAnswer(t, resp, mdns.RcodeSuccess, "10.0.1.2")
	}
}

// TestRotation: each query starts the list one address further, so that
// clients taking the first address spread over all of them.
func TestRotation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	addr := listen(t, s, "net1", net1IP)
	s.SetRecords("net1", []Record{webRecord(), dbRecord()})

	for _, name := range []string{"tasks.web.", "db."} {
		var firsts []string
		var set []string
		for i := range 3 {
			m := query(t, "udp", addr, name, mdns.TypeA, 0)
			got := answerIPs(m)
			if i == 0 {
				set = sortedIPs(m)
			} else if !slices.Equal(sortedIPs(m), set) {
				t.Fatalf("%s: answer %v, then %v", name, set, got)
			}
			firsts = append(firsts, got[0])
		}
		distinct := slices.Compact(slices.Sorted(slices.Values(firsts)))
		if len(distinct) != min(3, len(set)) {
			t.Errorf("%s: first addresses %v, want them to rotate through %v", name, firsts, set)
		}
	}
}

// TestSetRecordsChangesAnswersAtOnce: no TTL to wait out on the server
// side; the next query sees the new records.
func TestSetRecordsChangesAnswersAtOnce(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)

	s.SetRecords("net1", []Record{webRecord()})
	wantAnswer(t, query(t, "udp", addr, "web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.2")

	// Scaled down to one task, and the VIP changed (service re-created).
	r := webRecord()
	r.VIP = net.ParseIP("10.0.1.20")
	r.Tasks = ips("10.0.1.9")
	s.SetRecords("net1", []Record{r})
	wantAnswer(t, query(t, "udp", addr, "web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.20")
	wantAnswer(t, query(t, "udp", addr, "tasks.web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.9")

	// No running task: the name still exists, with no address, and is
	// not forwarded.
	r.Tasks = nil
	s.SetRecords("net1", []Record{r})
	before := up.udp.Load()
	wantAnswer(t, query(t, "udp", addr, "tasks.web.", mdns.TypeA, 0), mdns.RcodeSuccess)
	if up.udp.Load() != before {
		t.Error("tasks.web forwarded while the service exists")
	}

	// Service removed from the network.
	s.SetRecords("net1", nil)
	wantAnswer(t, query(t, "udp", addr, "web.", mdns.TypeA, 0), mdns.RcodeNameError)
}

// TestOtherTypesOfKnownNames: a service name with no data of the type
// asked is NOERROR with no answer, not forwarded.
func TestOtherTypesOfKnownNames(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)
	v6 := Record{Names: []string{"web6"}, VIP: net.ParseIP("fd00::2"), Tasks: ips("fd00::3", "10.0.1.30")}
	s.SetRecords("net1", []Record{webRecord(), v6})

	tests := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"web.", mdns.TypeAAAA, nil},
		{"web.", mdns.TypeMX, nil},
		{"web.", mdns.TypeTXT, nil},
		{"web.", mdns.TypeANY, []string{"10.0.1.2"}},
		{"web6.", mdns.TypeAAAA, []string{"fd00::2"}},
		{"web6.", mdns.TypeA, nil},
		{"tasks.web6.", mdns.TypeA, []string{"10.0.1.30"}},
		{"tasks.web6.", mdns.TypeAAAA, []string{"fd00::3"}},
		{"tasks.web6.", mdns.TypeANY, []string{"10.0.1.30", "fd00::3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name+mdns.TypeToString[tt.qtype], func(t *testing.T) {
			m := query(t, "udp", addr, tt.name, tt.qtype, 0)
			wantAnswer(t, m, mdns.RcodeSuccess, tt.want...)
		})
	}
	if n := up.udp.Load(); n != 0 {
		t.Errorf("%d queries for known names went upstream", n)
	}
}

// TestEDNS: an answer to an EDNS0 query carries an OPT record; a version
// the server does not speak gets BADVERS.
func TestEDNS(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	addr := listen(t, s, "net1", net1IP)
	s.SetRecords("net1", []Record{webRecord()})

	m := query(t, "udp", addr, "web.", mdns.TypeA, 1232)
	wantAnswer(t, m, mdns.RcodeSuccess, "10.0.1.2")
	if m.IsEdns0() == nil {
		t.Error("no OPT in the answer to an EDNS0 query")
	}

	q := new(mdns.Msg).SetQuestion("web.", mdns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().SetVersion(1)
	c := &mdns.Client{Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != mdns.RcodeBadVers {
		t.Errorf("rcode %s, want BADVERS", mdns.RcodeToString[resp.Rcode])
	}
}

// TestLargeLocalAnswerTruncated: a service with many tasks does not fit
// 512 bytes; over UDP the client gets TC and the full list over TCP.
func TestLargeLocalAnswerTruncated(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	addr := listen(t, s, "net1", net1IP)
	r := Record{Names: []string{"big"}}
	var want []string
	for i := range 200 {
		ip := net.IPv4(10, 0, byte(2+i/250), byte(1+i%250))
		r.Tasks = append(r.Tasks, ip)
		want = append(want, ip.String())
	}
	s.SetRecords("net1", []Record{r})

	m := query(t, "udp", addr, "tasks.big.", mdns.TypeA, 0)
	if !m.Truncated {
		t.Error("UDP answer of 200 addresses not truncated")
	}
	if n := len(answerIPs(m)); n == 0 || n >= 200 {
		t.Errorf("truncated answer has %d addresses", n)
	}
	m.Compress = true // as sent
	if size := m.Len(); size > mdns.MinMsgSize {
		t.Errorf("truncated answer is %d bytes", size)
	}
	wantAnswer(t, query(t, "tcp", addr, "tasks.big.", mdns.TypeA, 0), mdns.RcodeSuccess, want...)
	wantAnswer(t, query(t, "udp", addr, "tasks.big.", mdns.TypeA, 4096), mdns.RcodeSuccess, want...)
}

// TestNotifyNotImplemented: only standard queries are served; a NOTIFY is
// neither answered as a query nor forwarded.
func TestNotifyNotImplemented(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)
	m := new(mdns.Msg).SetNotify("example.test.")
	resp, _, err := (&mdns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("rcode %s, want NOTIMP", mdns.RcodeToString[resp.Rcode])
	}
	if up.udp.Load() != 0 {
		t.Error("NOTIFY forwarded")
	}
}

// TestListenLifecycle covers the order the agent may call things in and
// the errors it can get.
func TestListenLifecycle(t *testing.T) {
	t.Parallel()
	s := newServer(t)

	// Records before the listener: served as soon as it listens.
	s.SetRecords("net1", []Record{webRecord()})
	if got := s.Addr("net1"); got != "" {
		t.Fatalf("Addr before Listen = %q", got)
	}
	addr := listen(t, s, "net1", net1IP)
	wantAnswer(t, query(t, "udp", addr, "web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.2")

	// Again on the same address: nothing changes.
	if got := listen(t, s, "net1", net1IP); got != addr {
		t.Fatalf("Listen again moved the server from %s to %s", addr, got)
	}

	// Another network cannot take the same address.
	host, port, _ := net.SplitHostPort(addr)
	s2 := newServerConfig(t, Config{})
	s2.port = mustAtoi(t, port)
	if err := s2.Listen("net9", net.ParseIP(host)); err == nil {
		t.Fatal("a second listener on the same address and port succeeded")
	}
	if err := s.Listen("net1", net.IPv4zero); err == nil {
		t.Fatal("Listen on 0.0.0.0 succeeded")
	}

	// Moving to another address keeps the records and frees the old one.
	moved := listen(t, s, "net1", "127.0.0.5")
	if moved == addr {
		t.Fatal("Listen on another address did not move")
	}
	wantAnswer(t, query(t, "udp", moved, "web.", mdns.TypeA, 0), mdns.RcodeSuccess, "10.0.1.2")
	if _, err := tryQuery("udp", addr, "web.", mdns.TypeA, 0); err == nil {
		t.Fatal("the old address still answers after the move")
	}

	// Unlisten stops answering and forgets the records.
	if err := s.Unlisten("net1"); err != nil {
		t.Fatal(err)
	}
	if _, err := tryQuery("udp", moved, "web.", mdns.TypeA, 0); err == nil {
		t.Fatal("still answering after Unlisten")
	}
	if _, err := tryQuery("tcp", moved, "web.", mdns.TypeA, 0); err == nil {
		t.Fatal("still answering over TCP after Unlisten")
	}
	again := listen(t, s, "net1", net1IP)
	wantAnswer(t, query(t, "udp", again, "web.", mdns.TypeA, 0), mdns.RcodeServerFailure) // no upstream
	if err := s.Unlisten("never-seen"); err != nil {
		t.Fatalf("Unlisten of an unknown network: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen("net1", net.ParseIP(net1IP)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Listen after Close: %v, want ErrClosed", err)
	}
	s.SetRecords("net1", []Record{webRecord()}) // must not panic
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConcurrentQueries runs UDP and TCP queries while the records flip
// between two versions. Run it with -race. Every answer must be wholly one
// version: SetRecords replaces a network's records atomically.
func TestConcurrentQueries(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	s := newServer(t, up.addr)
	addr := listen(t, s, "net1", net1IP)
	v1 := webRecord()
	v2 := webRecord()
	v2.VIP = net.ParseIP("10.0.1.102")
	v2.Tasks = ips("10.0.1.103", "10.0.1.104")
	s.SetRecords("net1", []Record{v1})

	versions := map[string][][]string{
		"web.":       {{"10.0.1.2"}, {"10.0.1.102"}},
		"tasks.web.": {{"10.0.1.3", "10.0.1.4", "10.0.1.5"}, {"10.0.1.103", "10.0.1.104"}},
	}
	stop := make(chan struct{})
	var flips sync.WaitGroup
	flips.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				s.SetRecords("net1", []Record{v2})
			} else {
				s.SetRecords("net1", []Record{v1})
			}
		}
	})

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			netw := []string{"udp", "tcp"}[g%2]
			for i := range 100 {
				name := []string{"web.", "tasks.web.", "example.test."}[i%3]
				m, err := tryQuery(netw, addr, name, mdns.TypeA, 0)
				if err != nil {
					errs <- err
					return
				}
				got := sortedIPs(m)
				if name == "example.test." {
					if !slices.Equal(got, []string{"192.0.2.10"}) {
						errs <- fmt.Errorf("%s: %v", name, got)
						return
					}
					continue
				}
				if !slices.ContainsFunc(versions[name], func(v []string) bool { return slices.Equal(v, got) }) {
					errs <- fmt.Errorf("%s over %s: %v is neither version", name, netw, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	flips.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
