package lb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestBalancer returns a balancer that logs to the test and is closed
// when the test ends.
func newTestBalancer(t *testing.T) *Balancer {
	t.Helper()
	b := New(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// publish publishes a port the kernel reports free on 127.0.0.1 (or on
// listenAddr) and returns its number. The port is found by binding :0 and
// closing; if someone takes it in between, it tries another.
func publish(t *testing.T, b *Balancer, proto, listenAddr, proxy string) uint16 {
	t.Helper()
	if listenAddr == "" {
		listenAddr = "127.0.0.1"
	}
	if listenAddr == "*" {
		listenAddr = ""
	}
	for range 10 {
		port := freePort(t, proto)
		err := b.Publish(PortConfig{Port: port, Protocol: proto, ListenAddr: listenAddr, ProxyProtocol: proxy})
		if err == nil {
			return port
		}
		if !errors.Is(err, ErrPortInUse) {
			t.Fatalf("Publish %d/%s: %v", port, proto, err)
		}
	}
	t.Fatal("no free port found")
	return 0
}

func freePort(t *testing.T, proto string) uint16 {
	t.Helper()
	var addr net.Addr
	if proto == "udp" {
		c, err := net.ListenPacket("udp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr()
		c.Close()
	} else {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr()
		l.Close()
	}
	_, p, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// closedAddr returns an address on which nothing listens: connecting to it
// is refused.
func closedAddr(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func portAddr(port uint16) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))) }

// httpBackend is a task stand-in that answers every request with its name.
type httpBackend struct {
	name, addr string
	hits       atomic.Int64
	// first is when the first request arrived (UnixNano), 0 before.
	first atomic.Int64
}

func startHTTPBackend(t *testing.T, name, ip string) *httpBackend {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	hb := &httpBackend{name: name, addr: l.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hb.first.CompareAndSwap(0, time.Now().UnixNano())
		hb.hits.Add(1)
		io.WriteString(w, hb.name)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return hb
}

// get makes one request on a new connection and returns the body.
func get(port uint16) (string, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + portAddr(port) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// holdBackend is a task stand-in for long connections: it greets each
// connection with its name and a newline, then echoes lines.
type holdBackend struct {
	name, addr string
	accepts    atomic.Int64
	lastAccept atomic.Int64 // UnixNano
	mu         sync.Mutex
	conns      []net.Conn
}

func startHoldBackend(t *testing.T, name, ip string) *holdBackend {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	hb := &holdBackend{name: name, addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			hb.accepts.Add(1)
			hb.lastAccept.Store(time.Now().UnixNano())
			hb.mu.Lock()
			hb.conns = append(hb.conns, c)
			hb.mu.Unlock()
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", hb.name)
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		hb.mu.Lock()
		for _, c := range hb.conns {
			c.Close()
		}
		hb.mu.Unlock()
	})
	return hb
}

// dialHold connects through the balancer and returns the connection and
// the name of the backend that greeted it.
func dialHold(t *testing.T, port uint16) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", portAddr(port), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("greeting through port %d: %v", port, err)
	}
	return c, r, strings.TrimSpace(name)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// activeOf returns the balancer's connection count of a backend address.
func activeOf(b *Balancer, port uint16, proto, addr string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pools[portKey{port, proto}]
	if p == nil {
		return -1
	}
	for k, be := range p.members {
		if k.Addr == addr {
			return be.active.Load()
		}
	}
	return -1
}
