package lb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

func TestSpreadsRequestsOverBackends(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	var bs []Backend
	for i := range 5 {
		hb := startHTTPBackend(t, fmt.Sprintf("task%d", i), fmt.Sprintf("127.0.0.%d", 10+i))
		bs = append(bs, Backend{TaskID: hb.name, Addr: hb.addr})
	}
	b.SetBackends(port, "tcp", bs)

	seen := map[string]int{}
	for range 10 {
		name, err := get(port)
		if err != nil {
			t.Fatal(err)
		}
		seen[name]++
	}
	t.Logf("requests per backend: %v", seen)
	if len(seen) < 3 {
		t.Errorf("10 requests reached %d backends, want at least 3: %v", len(seen), seen)
	}
}

func TestLeastConnections(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	backends := map[string]*holdBackend{}
	var bs []Backend
	for i := range 3 {
		hb := startHoldBackend(t, fmt.Sprintf("task%d", i), "127.0.0.1")
		backends[hb.name] = hb
		bs = append(bs, Backend{TaskID: hb.name, Addr: hb.addr})
	}
	b.SetBackends(port, "tcp", bs)

	// One long connection on each backend.
	conns := map[string]net.Conn{}
	for range 3 {
		c, _, name := dialHold(t, port)
		if conns[name] != nil {
			t.Fatalf("two of the first three connections went to %s", name)
		}
		conns[name] = c
	}
	// Free one backend at a time: the next connection must go there, with
	// the round-robin position wherever it is.
	for round := range 6 {
		freed := fmt.Sprintf("task%d", (round*2)%3)
		conns[freed].Close()
		waitFor(t, "the balancer to see the close", func() bool {
			return activeOf(b, port, "tcp", backends[freed].addr) == 0
		})
		c, _, name := dialHold(t, port)
		if name != freed {
			t.Fatalf("round %d: new connection went to %s, want %s (the only backend with no connection)", round, name, freed)
		}
		conns[name] = c
	}
}

func TestSkipsRefusingBackend(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	a := startHTTPBackend(t, "a", "127.0.0.1")
	c := startHTTPBackend(t, "c", "127.0.0.1")
	dead := closedAddr(t, "127.0.0.1")
	b.SetBackends(port, "tcp", []Backend{{"a", a.addr}, {"dead", dead}, {"c", c.addr}})
	for i := range 20 {
		if _, err := get(port); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if a.hits.Load() == 0 || c.hits.Load() == 0 {
		t.Errorf("hits a=%d c=%d, want both > 0", a.hits.Load(), c.hits.Load())
	}
}

func TestAllBackendsDownResetsQuickly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backends func(t *testing.T) []Backend
	}{
		{"refusing", func(t *testing.T) []Backend {
			return []Backend{{"x", closedAddr(t, "127.0.0.1")}, {"y", closedAddr(t, "127.0.0.1")}}
		}},
		{"none", func(t *testing.T) []Backend { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newTestBalancer(t)
			port := publish(t, b, "tcp", "", "")
			b.SetBackends(port, "tcp", tc.backends(t))
			for i := range 3 {
				start := time.Now()
				// The reset may come before connect(2) returns, or on
				// the first read: either way the client knows at once.
				c, err := net.Dial("tcp", portAddr(port))
				if err == nil {
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					_, err = c.Read(make([]byte, 1))
					c.Close()
				}
				took := time.Since(start)
				t.Logf("attempt %d: %v after %v", i, err, took)
				if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || took > 500*time.Millisecond {
					t.Fatalf("attempt %d: read = %v after %v, want the connection closed at once", i, err, took)
				}
			}
		})
	}
}

func TestDrain(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	x := startHoldBackend(t, "x", "127.0.0.1")
	y := startHoldBackend(t, "y", "127.0.0.1")
	b.SetBackends(port, "tcp", []Backend{{"x", x.addr}, {"y", y.addr}})

	// An established connection to x…
	var cx net.Conn
	var rx *bufio.Reader
	for cx == nil {
		c, r, name := dialHold(t, port)
		if name == "x" {
			cx, rx = c, r
		}
	}
	start := time.Now()
	b.Drain("x")
	t.Logf("Drain returned after %v", time.Since(start))
	acceptsX := x.accepts.Load()

	// …no new connection reaches x…
	for i := range 10 {
		if _, _, name := dialHold(t, port); name != "y" {
			t.Fatalf("connection %d after Drain went to %s", i, name)
		}
	}
	// …not even when the agent's next list still has it.
	b.SetBackends(port, "tcp", []Backend{{"x", x.addr}, {"y", y.addr}})
	for i := range 4 {
		if _, _, name := dialHold(t, port); name != "y" {
			t.Fatalf("connection %d after Drain and a stale SetBackends went to %s", i, name)
		}
	}
	if n := x.accepts.Load(); n != acceptsX {
		t.Errorf("x accepted %d connections after Drain", n-acceptsX)
	}
	// …and the established one goes on.
	fmt.Fprintf(cx, "still here\n")
	line, err := rx.ReadString('\n')
	if err != nil || line != "still here\n" {
		t.Fatalf("established connection after Drain: %q, %v", line, err)
	}
}

func TestDrainWaitsForDialInProgress(t *testing.T) {
	b := New(nil)
	defer b.Close()
	b.SetBackends(9, "tcp", []Backend{{"x", "127.0.0.1:1"}})
	p := b.pools[portKey{9, "tcp"}]
	be := p.acquire(time.Now(), nil) // a dial to x starts
	if be == nil || be.TaskID != "x" {
		t.Fatalf("acquire = %v", be)
	}
	done := make(chan struct{})
	go func() {
		b.Drain("x")
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Drain returned while a dial to the task was in progress")
	case <-time.After(50 * time.Millisecond):
	}
	be.dialDone(true, time.Now(), time.Second)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after the dial ended")
	}
	if got := p.acquire(time.Now(), nil); got != nil {
		t.Fatalf("acquire after Drain = %v, want none", got.Backend)
	}
}

// TestSetBackendsTakesEffect measures the time from SetBackends to the
// first request served by the new backend, with a client opening
// connections back to back as a load would.
func TestSetBackendsTakesEffect(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	old := startHTTPBackend(t, "old", "127.0.0.1")
	b.SetBackends(port, "tcp", []Backend{{"old", old.addr}})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				get(port)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	waitFor(t, "traffic on the old backend", func() bool { return old.hits.Load() > 0 })

	nb := startHTTPBackend(t, "new", "127.0.0.1")
	start := time.Now()
	b.SetBackends(port, "tcp", []Backend{{"old", old.addr}, {"new", nb.addr}})
	waitFor(t, "traffic on the new backend", func() bool { return nb.first.Load() != 0 })
	t.Logf("SetBackends → first request served by the new backend: %v", time.Unix(0, nb.first.Load()).Sub(start))

	// Removing the old one: nothing new goes there once SetBackends returned.
	b.SetBackends(port, "tcp", []Backend{{"new", nb.addr}})
	// Requests already on their way may still be served by old; only
	// connections made from here on count.
	oldHits := old.hits.Load()
	for range 10 {
		if name, err := get(port); err != nil || name != "new" {
			t.Fatalf("after removing old: %q, %v", name, err)
		}
	}
	t.Logf("old served %d requests that were in flight when it was removed", old.hits.Load()-oldHits)
}

func TestHalfClose(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Read the whole request (until the client's FIN), then answer.
		req, _ := io.ReadAll(c)
		fmt.Fprintf(c, "got %s", req)
	}()
	b.SetBackends(port, "tcp", []Backend{{"t", l.Addr().String()}})
	c, err := net.Dial("tcp", portAddr(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "hello")
	c.(*net.TCPConn).CloseWrite()
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "got hello" {
		t.Fatalf("answer after half-close: %q, %v", resp, err)
	}
}

func TestProxyProtocol(t *testing.T) {
	for _, tc := range []struct{ version, listen string }{
		{"v1", "127.0.0.1"}, {"v2", "127.0.0.1"},
		// Every address: a dual-stack socket, IPv4 clients as v4-mapped.
		{"v1", "*"}, {"v2", "*"},
	} {
		t.Run(tc.version+"/"+tc.listen, func(t *testing.T) {
			b := newTestBalancer(t)
			port := publish(t, b, "tcp", tc.listen, tc.version)
			inner, err := net.Listen("tcp", "127.0.0.2:0")
			if err != nil {
				t.Fatal(err)
			}
			l := &proxyproto.Listener{Listener: inner, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
				return proxyproto.REQUIRE, nil
			}}
			defer l.Close()
			type seen struct{ src, dst string }
			got := make(chan seen, 1)
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				// The header is read with the first bytes.
				line, _ := bufio.NewReader(c).ReadString('\n')
				got <- seen{c.RemoteAddr().String(), c.LocalAddr().String()}
				io.WriteString(c, line)
			}()
			b.SetBackends(port, "tcp", []Backend{{"t", inner.Addr().String()}})

			// The client comes from 127.0.0.3, the balancer dials from
			// 127.0.0.1: only a header can tell the backend about .3.
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}, Timeout: 2 * time.Second}
			c, err := d.Dial("tcp", portAddr(port))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "hi\n")
			if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hi\n" {
				t.Fatalf("echo: %q, %v", line, err)
			}
			s := <-got
			if s.src != c.LocalAddr().String() {
				t.Errorf("backend saw the client as %s, want %s", s.src, c.LocalAddr())
			}
			if s.dst != portAddr(port) {
				t.Errorf("backend saw the destination as %s, want %s", s.dst, portAddr(port))
			}
		})
	}
}

// TestKeepAliveInherited checks that accepted connections get keep-alive
// from the listening socket, since the balancer no longer sets it on each.
func TestKeepAliveInherited(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	x := startHoldBackend(t, "x", "127.0.0.1")
	b.SetBackends(port, "tcp", []Backend{{"x", x.addr}})
	dialHold(t, port)
	// The client's socket as the event loop holds it.
	fd := -1
	waitFor(t, "the connection in an event loop", func() bool {
		for _, l := range b.eng.loops {
			l.mu.Lock()
			for _, s := range l.sides {
				if s == &s.t.a {
					fd = s.fd
				}
			}
			l.mu.Unlock()
		}
		return fd >= 0
	})
	on, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	idle, _ := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
	if on != 1 || idle != 15 {
		t.Errorf("accepted connection: SO_KEEPALIVE=%d TCP_KEEPIDLE=%d, want 1 and 15", on, idle)
	}
}

func TestPortInUse(t *testing.T) {
	b := newTestBalancer(t)

	// Another program holds the port.
	other, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	port := uint16(other.Addr().(*net.TCPAddr).Port)
	err = b.Publish(PortConfig{Port: port, Protocol: "tcp"})
	want := fmt.Sprintf("port %d/tcp is already in use on this node", port)
	if err == nil || !errors.Is(err, ErrPortInUse) || err.Error() != want {
		t.Fatalf("Publish on a taken port: %v, want %q", err, want)
	}

	otherUDP, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer otherUDP.Close()
	uport := uint16(otherUDP.LocalAddr().(*net.UDPAddr).Port)
	err = b.Publish(PortConfig{Port: uport, Protocol: "udp"})
	if want := fmt.Sprintf("port %d/udp is already in use", uport); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Publish on a taken UDP port: %v, want %q", err, want)
	}

	// shoal holds it: published twice.
	port = publish(t, b, "tcp", "", "")
	err = b.Publish(PortConfig{Port: port, Protocol: "tcp", ListenAddr: "127.0.0.1"})
	var pe *PortInUseError
	if !errors.As(err, &pe) || !pe.ByShoal || !strings.Contains(err.Error(), fmt.Sprintf("port %d/tcp", port)) {
		t.Fatalf("second Publish: %v", err)
	}
}

func TestUnpublish(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	x := startHoldBackend(t, "x", "127.0.0.1")
	b.SetBackends(port, "tcp", []Backend{{"x", x.addr}})
	c, r, _ := dialHold(t, port)
	if !b.Publishes(port, "tcp") || b.Publishes(port, "udp") {
		t.Errorf("Publishes(%d, tcp/udp) = %v/%v, want true/false", port, b.Publishes(port, "tcp"), b.Publishes(port, "udp"))
	}

	if err := b.Unpublish(port, "tcp"); err != nil {
		t.Fatal(err)
	}
	if b.Publishes(port, "tcp") {
		t.Errorf("Publishes(%d, tcp) after Unpublish", port)
	}
	// The port is free at once…
	l, err := net.Listen("tcp", portAddr(port))
	if err != nil {
		t.Fatalf("port %d after Unpublish: %v", port, err)
	}
	l.Close()
	// …and the established connection goes on.
	io.WriteString(c, "ping\n")
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("established connection after Unpublish: %q, %v", line, err)
	}
	if err := b.Unpublish(port, "tcp"); err == nil {
		t.Error("second Unpublish succeeded")
	}
}

func TestCloseEndsConnections(t *testing.T) {
	b := New(nil)
	port := publish(t, b, "tcp", "", "")
	x := startHoldBackend(t, "x", "127.0.0.1")
	b.SetBackends(port, "tcp", []Backend{{"x", x.addr}})
	c, r, _ := dialHold(t, port)
	// Close waits for every goroutine, so it returning at all means no
	// proxied connection was left running.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection still open after Close")
	}
	c.Close()
	if err := b.Publish(PortConfig{Port: port, Protocol: "tcp"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v", err)
	}
}

func TestPublishValidates(t *testing.T) {
	b := newTestBalancer(t)
	for _, pc := range []PortConfig{
		{Port: 0, Protocol: "tcp"},
		{Port: 8080, Protocol: "sctp"},
		{Port: 8080, Protocol: "udp", ProxyProtocol: "v1"},
		{Port: 8080, Protocol: "tcp", ProxyProtocol: "v3"},
		{Port: 8080, Protocol: "tcp", ListenAddr: "localhost"},
	} {
		if err := b.Publish(pc); err == nil {
			t.Errorf("Publish(%+v) succeeded", pc)
		} else {
			t.Logf("Publish(%+v): %v", pc, err)
		}
	}
}
