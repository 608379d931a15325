package lb

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// tcpListener is a published TCP port.
type tcpListener struct {
	b   *Balancer
	key portKey
	// ln is the listening socket as an *os.File: a TCPListener's RawConn
	// cannot wait for readability, an os.File's can (see serve).
	ln    *os.File
	pool  *pool
	proxy byte // PROXY protocol version, 0 for none
	// lastNoBackendLog rate-limits the "no backend" warning (UnixNano),
	// which a client retrying in a loop would otherwise turn into a flood.
	lastNoBackendLog atomic.Int64
}

func (b *Balancer) listenTCP(key portKey, addr string, proxy byte, p *pool) (listener, error) {
	// Keep-alive is set once on the listening socket, whose accepted
	// sockets inherit it, instead of four setsockopt calls per connection
	// (Go's default); it finds clients that vanished without a FIN.
	lc := net.ListenConfig{KeepAlive: -1, Control: setKeepAlive}
	ln, err := lc.Listen(b.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// File duplicates the descriptor into a file Go's poller watches;
	// closing the listener then leaves the socket listening through it.
	f, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return nil, err
	}
	l := &tcpListener{b: b, key: key, ln: f, pool: p, proxy: proxy}
	b.wg.Add(1)
	go l.serve()
	return l, nil
}

// stop closes the listening socket; os.File.Close returns once the
// descriptor is closed (after serve's accept returned), so the port is free.
func (l *tcpListener) stop() { l.ln.Close() }

// setKeepAlive turns on TCP keep-alive with Go's default timings (probes
// after 15 s idle, every 15 s, 9 of them).
func setKeepAlive(_, _ string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range []struct{ level, opt, v int }{
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		} {
			if err = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); err != nil {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// serve accepts connections until the listener is closed. It accepts with
// accept4(2) itself rather than with AcceptTCP: the client's socket goes
// to an event loop (copy.go) anyway, and a socket Go never wrapped needs
// no registration with Go's poller, no getsockname, and no duplicate and
// close to take it back (six system calls per connection).
func (l *tcpListener) serve() {
	defer l.b.wg.Done()
	rc, err := l.ln.SyscallConn()
	if err != nil {
		l.b.log.Error("accept loop", "port", l.key.String(), "error", err)
		return
	}
	var pause time.Duration
	for {
		var aerr error
		// RawConn.Read calls back when the listener is readable and parks
		// in between; each call accepts all that is waiting.
		err := rc.Read(func(fd uintptr) bool {
			for {
				cfd, sa, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
				switch err {
				case nil:
					pause = 0
					l.b.wg.Add(1)
					go l.handle(cfd, sa)
				case unix.EAGAIN:
					return false
				case unix.EINTR, unix.ECONNABORTED:
					// A client that gave up before its turn: next.
				default:
					aerr = err
					return true
				}
			}
		})
		if err != nil {
			return // the listener was closed
		}
		// EMFILE, ENOBUFS…: the node is short of something and the next
		// accept would fail alike; back off as net/http does instead of
		// spinning.
		pause = min(max(2*pause, 5*time.Millisecond), time.Second)
		l.b.log.Warn("accept failed", "port", l.key.String(), "error", aerr, "retry.in", pause)
		time.Sleep(pause)
	}
}

// handle serves one client connection: pick a backend that answers, tell
// it who the client is if the port asks for it, then hand both to an
// event loop that copies both ways.
func (l *tcpListener) handle(cfd int, remote unix.Sockaddr) {
	defer l.b.wg.Done()
	be, server := l.connect()
	if server == nil {
		// A reset tells the client at once that nothing serves the port;
		// a FIN would read as an empty reply.
		closeFd(cfd, true)
		return
	}
	// Accepted sockets inherit keep-alive from the listener, but not
	// TCP_NODELAY; without it a small reply that follows another would
	// wait for the client's ACK.
	unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if l.proxy != 0 {
		if err := l.writeProxyHeader(server, cfd, remote); err != nil {
			be.active.Add(-1)
			closeFd(cfd, true)
			resetConn(server)
			return
		}
	}
	// From here the connection belongs to an event loop, which ends its
	// count on the backend when it ends.
	if err := l.b.eng.add(cfd, server, func() { be.active.Add(-1) }); err != nil {
		be.active.Add(-1)
		if !errors.Is(err, ErrClosed) {
			l.b.log.Warn("connection dropped", "port", l.key.String(), "error", err)
		}
	}
}

// writeProxyHeader tells the backend the client's address and the address
// the client connected to.
func (l *tcpListener) writeProxyHeader(server *net.TCPConn, cfd int, remote unix.Sockaddr) error {
	local, err := unix.Getsockname(cfd)
	if err != nil {
		return err
	}
	h := proxyproto.HeaderProxyFromAddrs(l.proxy, tcpAddr(remote), tcpAddr(local))
	_, err = h.WriteTo(server)
	return err
}

// tcpAddr converts a socket address; an IPv4 client of a dual-stack
// socket comes as a v4-mapped IPv6 address, which go-proxyproto writes
// as IPv4.
func tcpAddr(sa unix.Sockaddr) *net.TCPAddr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return &net.TCPAddr{}
}

// resetConn closes c with an RST.
func resetConn(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

// connect dials backends in the order of the policy until one answers;
// nil when none did (or there is none).
func (l *tcpListener) connect() (*backend, *net.TCPConn) {
	d := net.Dialer{Timeout: l.b.dialTimeout}
	var tried []*backend
	for {
		be := l.pool.acquire(time.Now(), tried)
		if be == nil {
			l.noBackend(len(tried))
			return nil, nil
		}
		c, err := d.DialContext(l.b.ctx, "tcp", be.Addr)
		if be.dialDone(err == nil, time.Now(), l.b.quarantine) {
			l.b.log.Warn("backend failed, skipping it", "port", l.key.String(), "task.id", be.TaskID,
				"backend.addr", be.Addr, "skip.for", l.b.quarantine, "error", err)
		}
		if err == nil {
			return be, c.(*net.TCPConn)
		}
		if l.b.ctx.Err() != nil {
			return nil, nil
		}
		tried = append(tried, be)
	}
}

func (l *tcpListener) noBackend(tried int) {
	now := time.Now().UnixNano()
	last := l.lastNoBackendLog.Load()
	if now-last < int64(time.Second) || !l.lastNoBackendLog.CompareAndSwap(last, now) {
		return
	}
	if tried == 0 {
		l.b.log.Warn("no backend for the port, connection reset", "port", l.key.String())
	} else {
		l.b.log.Warn("no backend answered, connection reset", "port", l.key.String(), "tried", tried)
	}
}
