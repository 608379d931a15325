package lb

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// tcpListener is a published TCP port.
type tcpListener struct {
	b     *Balancer
	key   portKey
	ln    *net.TCPListener
	pool  *pool
	proxy byte // PROXY protocol version, 0 for none
	// lastNoBackendLog rate-limits the "no backend" warning (UnixNano),
	// which a client retrying in a loop would otherwise turn into a flood.
	lastNoBackendLog atomic.Int64
}

func (b *Balancer) listenTCP(key portKey, addr string, proxy byte, p *pool) (listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(b.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &tcpListener{b: b, key: key, ln: ln.(*net.TCPListener), pool: p, proxy: proxy}
	b.wg.Add(1)
	go l.serve()
	return l, nil
}

func (l *tcpListener) stop() { l.ln.Close() }

func (l *tcpListener) serve() {
	defer l.b.wg.Done()
	var pause time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE, ENOBUFS…: the node is short of something and the
			// next accept would fail alike; back off as net/http does
			// instead of spinning.
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			l.b.log.Warn("accept failed", "port", l.key.String(), "error", err, "retry.in", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		l.b.wg.Add(1)
		go l.handle(c)
	}
}

// handle serves one client connection: pick a backend that answers, tell
// it who the client is if the port asks for it, then copy both ways.
func (l *tcpListener) handle(client *net.TCPConn) {
	defer l.b.wg.Done()
	be, server := l.connect()
	if server == nil {
		// A reset tells the client at once that nothing serves the port;
		// a FIN would read as an empty reply.
		client.SetLinger(0)
		client.Close()
		return
	}
	defer be.active.Add(-1)
	pc := &proxyConn{client: client, server: server}
	if !l.b.track(pc) {
		pc.abort()
		return
	}
	defer l.b.untrack(pc)
	if l.proxy != 0 {
		h := proxyproto.HeaderProxyFromAddrs(l.proxy, client.RemoteAddr(), client.LocalAddr())
		if _, err := h.WriteTo(server); err != nil {
			pc.abort()
			return
		}
	}
	pc.pipe()
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

// proxyConn is a client connection and the one the balancer opened to the
// backend for it.
type proxyConn struct {
	client, server *net.TCPConn
}

// pipe copies both ways until both directions are done.
func (pc *proxyConn) pipe() {
	done := make(chan struct{})
	go func() {
		pc.copy(pc.server, pc.client)
		close(done)
	}()
	pc.copy(pc.client, pc.server)
	<-done
	pc.client.Close()
	pc.server.Close()
}

// copy moves src's bytes to dst. io.Copy between two *net.TCPConn uses
// splice(2) through a pipe, so the payload stays in the kernel.
func (pc *proxyConn) copy(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		pc.abort()
		return
	}
	// src is done sending: pass its FIN on and keep the other direction
	// open, for protocols and clients that half-close and then read the
	// answer (HTTP/1.0-style requests, `nc -N`, many RPC framings).
	dst.CloseWrite()
}

// abort resets both connections: a reset or a failed write on one side
// (or Close) ends the other as a direct connection would have ended, and
// unblocks the copy of the other direction.
func (pc *proxyConn) abort() {
	pc.client.SetLinger(0)
	pc.server.SetLinger(0)
	pc.client.Close()
	pc.server.Close()
}
