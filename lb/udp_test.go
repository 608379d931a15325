package lb

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// udpBackend answers every datagram with "<name> <payload>", or, with
// parseProxy, "<name> <source from the PROXY header> <payload>".
type udpBackend struct {
	name, addr string
	got        atomic.Int64
}

func startUDPBackend(t *testing.T, name string, parseProxy bool) *udpBackend {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ub := &udpBackend{name: name, addr: c.LocalAddr().String()}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			ub.got.Add(1)
			payload := buf[:n]
			reply := name + " "
			if parseProxy {
				r := bufio.NewReader(bytes.NewReader(payload))
				h, err := proxyproto.Read(r)
				if err != nil {
					reply += "no-header:" + err.Error()
				} else {
					reply += h.SourceAddr.String() + " "
				}
				payload = payload[len(payload)-r.Buffered():]
			}
			c.WriteTo(append([]byte(reply), payload...), from)
		}
	}()
	t.Cleanup(func() { c.Close() })
	return ub
}

// ask sends a datagram on c and waits for the answer, sending again a few
// times since UDP may lose the first one (or, here, the first one may go to
// a backend that is gone).
func ask(t *testing.T, c *net.UDPConn, msg string) string {
	t.Helper()
	buf := make([]byte, 65535)
	for range 20 {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no answer to %q from %s", msg, c.RemoteAddr())
	return ""
}

func dialUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

func TestUDPEcho(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "udp", "", "")
	x := startUDPBackend(t, "x", false)
	y := startUDPBackend(t, "y", false)
	b.SetBackends(port, "udp", []Backend{{"x", x.addr}, {"y", y.addr}})

	c1, c2 := dialUDP(t, portAddr(port)), dialUDP(t, portAddr(port))
	first := map[*net.UDPConn]string{}
	for i := range 5 {
		for _, c := range []*net.UDPConn{c1, c2} {
			msg := fmt.Sprintf("hello %d", i)
			reply := ask(t, c, msg)
			name, payload, _ := strings.Cut(reply, " ")
			if payload != msg {
				t.Fatalf("reply %q to %q", reply, msg)
			}
			if first[c] == "" {
				first[c] = name
			} else if first[c] != name {
				t.Fatalf("a client's flow moved from %s to %s", first[c], name)
			}
		}
	}
	// Least connections: the second flow goes to the backend without one.
	if first[c1] == first[c2] {
		t.Errorf("both clients on %s, want one per backend", first[c1])
	}
}

func TestUDPSkipsRefusingBackend(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "udp", "", "")
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	y := startUDPBackend(t, "y", false)
	b.SetBackends(port, "udp", []Backend{{"dead", deadAddr}, {"y", y.addr}})

	// Several clients, so that some flows start on the dead backend.
	for i := range 4 {
		c := dialUDP(t, portAddr(port))
		for j := range 3 {
			msg := fmt.Sprintf("c%d m%d", i, j)
			if reply := ask(t, c, msg); reply != "y "+msg {
				t.Fatalf("reply %q to %q", reply, msg)
			}
		}
	}
}

// TestUDPRepliesFromTheAddressWrittenTo publishes on every address and
// writes to 127.0.0.2: the route back to the client prefers 127.0.0.1,
// and a connected client drops datagrams from any address but the one it
// wrote to.
func TestUDPRepliesFromTheAddressWrittenTo(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "udp", "*", "")
	x := startUDPBackend(t, "x", false)
	b.SetBackends(port, "udp", []Backend{{"x", x.addr}})
	c := dialUDP(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), port).String())
	if reply := ask(t, c, "hi"); reply != "x hi" {
		t.Fatalf("reply %q", reply)
	}
}

func TestUDPProxyProtocol(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "udp", "", "v2")
	x := startUDPBackend(t, "x", true)
	b.SetBackends(port, "udp", []Backend{{"x", x.addr}})
	c := dialUDP(t, portAddr(port))
	for i := range 3 {
		msg := fmt.Sprintf("m%d", i)
		want := fmt.Sprintf("x %s %s", c.LocalAddr(), msg)
		if reply := ask(t, c, msg); reply != want {
			t.Fatalf("reply %q, want %q", reply, want)
		}
	}
}

func TestUDPDrainAndIdle(t *testing.T) {
	b := newTestBalancer(t)
	b.udpIdle = 100 * time.Millisecond
	port := publish(t, b, "udp", "", "")
	x := startUDPBackend(t, "x", false)
	y := startUDPBackend(t, "y", false)
	b.SetBackends(port, "udp", []Backend{{"x", x.addr}, {"y", y.addr}})

	var cx *net.UDPConn
	for cx == nil {
		c := dialUDP(t, portAddr(port))
		if strings.HasPrefix(ask(t, c, "hi"), "x ") {
			cx = c
		}
	}
	b.Drain("x")
	// The flow to x goes on…
	if reply := ask(t, cx, "again"); reply != "x again" {
		t.Fatalf("established flow after Drain: %q", reply)
	}
	// …new ones go to y.
	for i := range 4 {
		if reply := ask(t, dialUDP(t, portAddr(port)), "new"); reply != "y new" {
			t.Fatalf("new flow %d after Drain: %q", i, reply)
		}
	}
	// Idle flows are forgotten.
	waitFor(t, "idle flows to end", func() bool {
		b.mu.Lock()
		l := b.listeners[portKey{port, "udp"}].(*udpListener)
		b.mu.Unlock()
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.flows) == 0
	})
	// The client of the ended flow to x starts a new one, on y.
	if reply := ask(t, cx, "later"); reply != "y later" {
		t.Fatalf("after idle: %q", reply)
	}
}

func TestUDPUnpublishFreesPort(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "udp", "", "")
	x := startUDPBackend(t, "x", false)
	b.SetBackends(port, "udp", []Backend{{"x", x.addr}})
	ask(t, dialUDP(t, portAddr(port)), "hi")
	if err := b.Unpublish(port, "udp"); err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenPacket("udp", portAddr(port))
	if err != nil {
		t.Fatalf("port %d/udp after Unpublish: %v", port, err)
	}
	c.Close()
}
