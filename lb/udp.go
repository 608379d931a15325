package lb

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// maxDatagram is the largest UDP payload over IPv4 or IPv6 without
// jumbograms.
const maxDatagram = 65535

// headerRoom is space kept before each datagram read from a client, so a
// PROXY v2 header (at most 16+36 bytes without TLVs) is put in front of it
// without copying the payload.
const headerRoom = 64

// bufPool holds reply buffers. A flow takes one only while a reply is in
// hand, not while it waits for one, so thousands of idle flows do not pin
// 64 KiB each.
var bufPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// udpListener is a published UDP port and its flows.
type udpListener struct {
	b     *Balancer
	key   portKey
	conn  *net.UDPConn
	pool  *pool
	proxy bool // a PROXY v2 header before every datagram
	// family is the socket's address family when replies must name their
	// source address (the port listens on every address), 0 otherwise.
	family int

	mu      sync.Mutex
	flows   map[netip.AddrPort]*flow
	stopped bool

	lastDropLog atomic.Int64 // UnixNano; rate-limits warnings
}

// flow is the traffic of one client address and port, bound to one
// backend through a socket connected to it.
type flow struct {
	l      *udpListener
	client netip.AddrPort
	be     *backend
	conn   *net.UDPConn
	// oob makes replies leave from the address the client wrote to.
	oob []byte
	// header is the PROXY v2 header put before each datagram, or nil.
	header []byte
	// last is when a datagram last went either way (UnixNano).
	last atomic.Int64
	once sync.Once
}

func (b *Balancer) listenUDP(key portKey, addr, listenAddr string, proxy byte, p *pool) (listener, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(b.ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	l := &udpListener{b: b, key: key, conn: conn, pool: p, proxy: proxy == 2, flows: map[netip.AddrPort]*flow{}}
	if listenAddr == "" || net.ParseIP(listenAddr).IsUnspecified() {
		// A socket bound to every address would answer from whatever
		// address the route to the client prefers; a client that wrote to
		// another address of the node drops such replies.
		if l.family, err = enablePktinfo(conn); err != nil {
			conn.Close()
			return nil, err
		}
	}
	b.wg.Add(1)
	go l.serve()
	return l, nil
}

func (l *udpListener) stop() {
	l.mu.Lock()
	l.stopped = true
	flows := l.flows
	l.flows = map[netip.AddrPort]*flow{}
	l.mu.Unlock()
	l.conn.Close()
	for _, f := range flows {
		f.end()
	}
}

func (l *udpListener) serve() {
	defer l.b.wg.Done()
	buf := make([]byte, headerRoom+maxDatagram)
	oob := make([]byte, 128)
	for {
		n, oobn, _, src, err := l.conn.ReadMsgUDPAddrPort(buf[headerRoom:], oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.warn("read failed", "error", err)
			continue
		}
		l.forward(src, oob[:oobn], buf, n)
	}
}

// forward sends one client datagram (at buf[headerRoom:headerRoom+n]) to
// the client's flow, starting one if needed.
func (l *udpListener) forward(src netip.AddrPort, oob, buf []byte, n int) {
	// Twice at most: a write refused because the backend is gone ends that
	// flow, and the datagram goes out again on a new one.
	for range 2 {
		f := l.flowFor(src, oob)
		if f == nil {
			return
		}
		pkt := buf[headerRoom : headerRoom+n]
		if f.header != nil {
			start := headerRoom - len(f.header)
			copy(buf[start:headerRoom], f.header)
			pkt = buf[start : headerRoom+n]
		}
		_, err := f.conn.Write(pkt)
		switch {
		case err == nil:
			f.touch()
			return
		case errors.Is(err, syscall.ECONNREFUSED):
			// On a connected UDP socket this is the ICMP port unreachable
			// of an earlier datagram: nothing listens there any more.
			f.fail(err)
		case errors.Is(err, net.ErrClosed):
			// The flow ended (idle) just now; it is out of the table
			// already, so the next round starts a new one.
		default:
			l.warn("send to backend failed, datagram dropped", "backend.addr", f.be.Addr, "error", err)
			return
		}
	}
}

// flowFor returns the flow of a client, starting one on the backend the
// policy picks; nil drops the datagram.
func (l *udpListener) flowFor(src netip.AddrPort, oob []byte) *flow {
	l.mu.Lock()
	f, stopped, count := l.flows[src], l.stopped, len(l.flows)
	l.mu.Unlock()
	if f != nil || stopped {
		return f
	}
	if count >= l.b.maxUDPFlows {
		l.warn("too many flows, datagram dropped", "flows", count)
		return nil
	}
	// Only this goroutine adds flows, so nobody else adds src meanwhile.
	f = l.newFlow(src, oob)
	if f == nil {
		return nil
	}
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		f.end()
		return nil
	}
	l.flows[src] = f
	l.mu.Unlock()
	l.b.wg.Add(1)
	go f.serve()
	return f
}

func (l *udpListener) newFlow(src netip.AddrPort, oob []byte) *flow {
	client := netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	local, ok := pktinfoDst(oob)
	if !ok {
		local = l.conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	}
	f := &flow{l: l, client: src}
	if l.family != 0 && ok {
		f.oob = pktinfoSrc(l.family, local)
	}
	if l.proxy {
		h := proxyproto.HeaderProxyFromAddrs(2,
			net.UDPAddrFromAddrPort(client),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Unmap(), l.key.port)))
		var err error
		if f.header, err = h.Format(); err != nil {
			l.warn("PROXY header", "client", client.String(), "error", err)
			return nil
		}
	}
	d := net.Dialer{Timeout: l.b.dialTimeout}
	var tried []*backend
	for {
		be := l.pool.acquire(time.Now(), tried)
		if be == nil {
			l.warn("no backend for the port, datagram dropped", "tried", len(tried))
			return nil
		}
		// Connecting a UDP socket sends nothing; it fails only when there
		// is no route, which is as good a reason to skip the backend.
		c, err := d.DialContext(l.b.ctx, "udp", be.Addr)
		if be.dialDone(err == nil, time.Now(), l.b.quarantine) {
			l.b.log.Warn("backend failed, skipping it", "port", l.key.String(), "task.id", be.TaskID,
				"backend.addr", be.Addr, "skip.for", l.b.quarantine, "error", err)
		}
		if err == nil {
			f.be, f.conn = be, c.(*net.UDPConn)
			f.touch()
			return f
		}
		tried = append(tried, be)
	}
}

// warn logs at most once a second per port: datagrams come fast, and one
// line tells the operator as much as a thousand.
func (l *udpListener) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.lastDropLog.Load()
	if now-last < int64(time.Second) || !l.lastDropLog.CompareAndSwap(last, now) {
		return
	}
	l.b.log.Warn(msg, append([]any{"port", l.key.String()}, args...)...)
}

func (f *flow) touch() { f.last.Store(time.Now().UnixNano()) }

// serve sends the backend's replies to the client until the flow has been
// idle for udpIdle, the backend refuses, or the port is unpublished.
func (f *flow) serve() {
	defer f.l.b.wg.Done()
	defer f.end()
	idle := f.l.b.udpIdle
	rc, err := f.conn.SyscallConn()
	if err != nil {
		return
	}
	f.conn.SetReadDeadline(time.Now().Add(idle))
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		// RawConn.Read calls back when the socket is readable, so the
		// buffer is taken only once a reply is there.
		err := rc.Read(func(fd uintptr) bool {
			bp = bufPool.Get().(*[]byte)
			n, rerr = unix.Read(int(fd), *bp)
			if rerr == unix.EAGAIN || rerr == unix.EINTR {
				bufPool.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if bp != nil {
				bufPool.Put(bp)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				last := time.Unix(0, f.last.Load())
				if time.Since(last) < idle {
					f.conn.SetReadDeadline(last.Add(idle))
					continue
				}
				return
			}
			f.fail(err)
			return
		}
		f.touch()
		_, _, err = f.l.conn.WriteMsgUDPAddrPort((*bp)[:n], f.oob, f.client)
		bufPool.Put(bp)
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// fail ends the flow after an error of its backend socket; a refusal also
// puts the backend aside, so the client's next datagram goes elsewhere.
func (f *flow) fail(err error) {
	if errors.Is(err, syscall.ECONNREFUSED) && f.be.markBad(time.Now(), f.l.b.quarantine) {
		f.l.b.log.Warn("backend refused, skipping it", "port", f.l.key.String(), "task.id", f.be.TaskID,
			"backend.addr", f.be.Addr, "skip.for", f.l.b.quarantine)
	}
	f.end()
}

// end closes the flow once and forgets it.
func (f *flow) end() {
	f.once.Do(func() {
		f.l.mu.Lock()
		if f.l.flows[f.client] == f {
			delete(f.l.flows, f.client)
		}
		f.l.mu.Unlock()
		f.conn.Close()
		f.be.active.Add(-1)
	})
}

// enablePktinfo asks the kernel for the destination address of every
// datagram (IP_PKTINFO, or IPV6_RECVPKTINFO on a dual-stack socket, which
// reports IPv4 destinations as v4-mapped addresses) and returns the
// socket's family.
func enablePktinfo(c *net.UDPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var family int
	var serr error
	err = rc.Control(func(fd uintptr) {
		family, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if serr != nil {
			return
		}
		switch family {
		case unix.AF_INET:
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		case unix.AF_INET6:
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		default:
			family = 0
		}
	})
	if err == nil {
		err = serr
	}
	return family, err
}

// pktinfoDst returns the destination address of a datagram from its
// control messages.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	if len(oob) == 0 {
		return netip.Addr{}, false
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; struct in_addr
			// ipi_spec_dst, ipi_addr; }: ipi_addr is the header's
			// destination.
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { struct in6_addr ipi6_addr; int
			// ipi6_ifindex; }
			return netip.AddrFrom16([16]byte(m.Data[0:16])), true
		}
	}
	return netip.Addr{}, false
}

// pktinfoSrc returns the control message that makes a datagram sent on a
// socket of the given family leave from src.
func pktinfoSrc(family int, src netip.Addr) []byte {
	switch family {
	case unix.AF_INET:
		if !src.Unmap().Is4() {
			return nil
		}
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: src.Unmap().As4()})
	case unix.AF_INET6:
		// An IPv4 source is given v4-mapped; the kernel's IPv4 path takes
		// it from an IPV6_PKTINFO (ip_cmsg_send with allow_ipv6).
		return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: src.As16()})
	}
	return nil
}
