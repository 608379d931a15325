package lb

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startFuncBackend runs serve for every connection to a new listener.
func startFuncBackend(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return l.Addr().String()
}

// loopSides counts the sockets the event loops hold.
func loopSides(b *Balancer) int {
	n := 0
	for _, l := range b.eng.loops {
		l.mu.Lock()
		n += len(l.sides)
		l.mu.Unlock()
	}
	return n
}

// TestBulkBothWays sends 24 MB each way at once through an echo backend,
// with the client reading slowly at first so that the backend's socket
// fills and the loop has to hold bytes back (pending) and resume.
func TestBulkBothWays(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	addr := startFuncBackend(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
	b.SetBackends(port, "tcp", []Backend{{"echo", addr}})

	const size = 24 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	c, err := net.Dial("tcp", portAddr(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	time.Sleep(200 * time.Millisecond) // let every buffer on the way fill up
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if len(got) != size || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), size)
	}
	waitFor(t, "the loop to let go of the pair", func() bool { return loopSides(b) == 0 })
	if a := activeOf(b, port, "tcp", addr); a != 0 {
		t.Errorf("backend still counts %d connections", a)
	}
}

// TestResetPasses checks that a reset on one side reaches the other, as on
// a direct connection.
func TestResetPasses(t *testing.T) {
	t.Run("backend resets", func(t *testing.T) {
		b := newTestBalancer(t)
		port := publish(t, b, "tcp", "", "")
		addr := startFuncBackend(t, func(c *net.TCPConn) {
			c.Read(make([]byte, 1))
			c.SetLinger(0)
			c.Close()
		})
		b.SetBackends(port, "tcp", []Backend{{"x", addr}})
		c, err := net.Dial("tcp", portAddr(port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("x"))
		_, err = c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read after the backend's reset: %v, want ECONNRESET", err)
		}
	})
	t.Run("client resets", func(t *testing.T) {
		b := newTestBalancer(t)
		port := publish(t, b, "tcp", "", "")
		seen := make(chan error, 1)
		addr := startFuncBackend(t, func(c *net.TCPConn) {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("hi"))
			_, err := io.ReadAll(c)
			seen <- err
		})
		b.SetBackends(port, "tcp", []Backend{{"x", addr}})
		c, err := net.Dial("tcp", portAddr(port))
		if err != nil {
			t.Fatal(err)
		}
		c.Read(make([]byte, 2))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		if err := <-seen; !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("backend read after the client's reset: %v, want ECONNRESET", err)
		}
	})
}

// TestManyConnections runs request/response exchanges on many connections
// at once and checks that nothing is left behind: no socket in the loops,
// no count on the backends, no descriptor.
func TestManyConnections(t *testing.T) {
	b := newTestBalancer(t)
	port := publish(t, b, "tcp", "", "")
	var addrs []string
	for range 3 {
		addrs = append(addrs, startFuncBackend(t, func(c *net.TCPConn) {
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				c.Write(bytes.ToUpper(buf[:n]))
			}
		}))
	}
	b.SetBackends(port, "tcp", []Backend{{"a", addrs[0]}, {"b", addrs[1]}, {"c", addrs[2]}})
	fds := openFds(t)

	const conns, rounds = 200, 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", portAddr(port))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 64)
			for r := range rounds {
				msg := fmt.Sprintf("c%d r%d", i, r)
				if _, err := c.Write([]byte(msg)); err != nil {
					errs <- err
					return
				}
				n, err := io.ReadFull(c, buf[:len(msg)])
				if err != nil || string(buf[:n]) != string(bytes.ToUpper([]byte(msg))) {
					errs <- fmt.Errorf("conn %d round %d: %q, %v", i, r, buf[:n], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFor(t, "every pair to end", func() bool { return loopSides(b) == 0 })
	for _, a := range addrs {
		if n := activeOf(b, port, "tcp", a); n != 0 {
			t.Errorf("backend %s still counts %d connections", a, n)
		}
	}
	// The backends' goroutines close their ends asynchronously; give the
	// descriptor count the same deadline.
	waitFor(t, "descriptors back to where they were", func() bool { return openFds(t) <= fds })
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestCloseUnderLoad closes the balancer while connections stream both
// ways and are being opened: Close must return, and every client must see
// its connection end.
func TestCloseUnderLoad(t *testing.T) {
	b := New(nil)
	port := publish(t, b, "tcp", "", "")
	addr := startFuncBackend(t, func(c *net.TCPConn) { io.Copy(c, c) })
	b.SetBackends(port, "tcp", []Backend{{"echo", addr}})

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial("tcp", portAddr(port))
				if err != nil {
					return // the port is gone: Close ran
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				for range 50 {
					if _, err := c.Write(buf); err != nil {
						break
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						if os.IsTimeout(err) {
							t.Error("a connection hung after Close")
						}
						break
					}
				}
				c.Close()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	done := make(chan struct{})
	go func() {
		b.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	close(stop)
	wg.Wait()
}

// TestBulkDoesNotStarveOthers runs a bulk download and a request/response
// connection through one event loop: the small exchanges must not wait
// for the bulk transfer.
func TestBulkDoesNotStarveOthers(t *testing.T) {
	b := newTestBalancer(t)
	eng, err := newEngine(1)
	if err != nil {
		t.Fatal(err)
	}
	eng.start(&b.wg)
	b.eng = eng // before Publish, which would start GOMAXPROCS loops
	bulkPort := publish(t, b, "tcp", "", "")
	echoPort := publish(t, b, "tcp", "", "")
	chunk := make([]byte, 1<<20)
	bulk := startFuncBackend(t, func(c *net.TCPConn) {
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	})
	echo := startFuncBackend(t, func(c *net.TCPConn) { io.Copy(c, c) })
	b.SetBackends(bulkPort, "tcp", []Backend{{"bulk", bulk}})
	b.SetBackends(echoPort, "tcp", []Backend{{"echo", echo}})

	bc, err := net.Dial("tcp", portAddr(bulkPort))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	go io.Copy(io.Discard, bc)
	time.Sleep(100 * time.Millisecond) // the bulk flow at full speed

	ec, err := net.Dial("tcp", portAddr(echoPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	ec.SetDeadline(time.Now().Add(20 * time.Second))
	var worst time.Duration
	buf := make([]byte, 5)
	for range 50 {
		start := time.Now()
		if _, err := ec.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(ec, buf); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("slowest of 50 round trips beside a bulk transfer: %v", worst)
	if worst > time.Second {
		t.Errorf("a round trip took %v beside a bulk transfer", worst)
	}
}
