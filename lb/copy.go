package lb

import (
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// The data path. A connection is accepted (accept4 on the listening
// socket, tcp.go) and its backend dialed by Go, with its timeout, retries
// and PROXY header; then both sockets are handed to an event loop that
// copies between them with edge-triggered epoll, the way nginx's stream
// module does.
//
// Why not a goroutine per direction with io.Copy (splice): Go's poller
// parks a goroutine only after a read(2) that failed with EAGAIN, and does
// not pass on epoll's EPOLLRDHUP, so a Go copy makes three system calls
// per message (read, write, and the read that finds nothing), and one
// more at the end to learn of the EOF. Ingress traffic is mostly small
// messages (a request, a response), and on the benchmark machine that
// made the io.Copy version use ~1.5× nginx's CPU per request
// (bench/README.md). The loop reads only after an edge and takes a short
// read as "nothing more for now", or, when the edge carried EPOLLRDHUP, as
// "that was the last of it": two calls per message plus a share of one
// epoll_wait. It also holds nothing for an idle connection but its two
// sockets and a small struct: no goroutine, no buffer, no pipe (io.Copy's
// splice keeps two pipes, four descriptors, per connection for its life).
// The price is a copy through userspace for bulk transfers, which splice
// would avoid; a loop could splice too, if bulk traffic ever matters more
// than request/response traffic.

// loopBufSize is the read size of a loop; one buffer per loop, not per
// connection.
const loopBufSize = 64 << 10

// maxReadsPerStep bounds what one direction moves before the loop turns
// to other connections (1 MiB): a bulk sender on a fast path would
// otherwise keep the loop to itself.
const maxReadsPerStep = 16

// engine is the set of event loops of a balancer.
type engine struct {
	loops []*loop
	next  atomic.Uint32
}

func newEngine(n int) (*engine, error) {
	e := &engine{}
	for range n {
		l, err := newLoop()
		if err != nil {
			e.close()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	return e, nil
}

// start runs each loop in a goroutine counted in wg.
func (e *engine) start(wg *sync.WaitGroup) {
	for _, l := range e.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run()
		}()
	}
}

// add hands an established pair over to a loop: the client's accepted
// socket and the Go conn to the backend, which the loop takes out of Go's
// hands (its socket lives on in the loop's descriptor). The loop calls
// done when the pair has ended. add fails only when the engine is closed
// or the node is out of descriptors; both sockets are then reset and done
// is not called.
func (e *engine) add(cfd int, server *net.TCPConn, done func()) error {
	l := e.loops[int(e.next.Add(1))%len(e.loops)]
	return l.add(cfd, server, done)
}

// close resets every connection of every loop and stops the loops.
func (e *engine) close() {
	for _, l := range e.loops {
		l.close()
	}
}

// side is one socket of a proxied pair, seen from the loop.
type side struct {
	fd int
	// id names the side in epoll events: unique for the loop's life,
	// unlike descriptor numbers, so an event harvested for a socket that
	// has since been closed cannot be taken for a new one's.
	id   uint64
	peer *side
	t    *tunnel
	// readable: an edge said there may be bytes (or an EOF) to read.
	readable bool
	// rdhup: the peer's FIN had arrived when an event was harvested, so
	// a short read after it has taken the last bytes and the EOF is all
	// that is left. hupErr (EPOLLHUP or EPOLLERR): a reset or an error
	// may be waiting; read until read(2) says what it is.
	rdhup, hupErr bool
	// eof: read returned 0; shutWr: the FIN was passed on to peer.
	eof, shutWr bool
	// pending holds bytes read from peer that this socket did not take
	// yet; while it is not empty peer is not read (back pressure).
	pending []byte
}

// tunnel is a client socket and its backend socket.
type tunnel struct {
	a, b side
	done func()
	// queued: in loop.again, to be stepped without a new event.
	queued bool
	ended  bool
}

// loop is one epoll event loop. Its epoll descriptor is itself watched by
// Go's poller: the loop's goroutine parks there when no socket has news,
// like any goroutine waiting for I/O, instead of blocking a thread in
// epoll_wait (which makes the runtime hand its P to another thread and
// take one back at every wake-up, a cost of the same order as the copy).
type loop struct {
	epfd int
	// file is epfd as Go's poller sees it; closing it stops run.
	file *os.File

	// mu is held by run while it handles a batch of events, and by close:
	// it guards the state of the tunnels. buf and again are run's.
	mu  sync.Mutex
	buf []byte
	// again holds tunnels that stopped reading for fairness with bytes
	// still waiting (see maxReadsPerStep): no edge will come for those
	// bytes, so run steps them again before it parks.
	again []*tunnel
	// tmu guards the table and closed. It is apart from mu so that add,
	// on the path of every new connection, does not wait for a batch.
	// Order: mu before tmu.
	tmu    sync.Mutex
	sides  map[uint64]*side
	lastID uint64
	closed bool
}

func newLoop() (*loop, error) {
	// Non-blocking, so that os.NewFile registers it with Go's poller.
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	return &loop{epfd: epfd, file: os.NewFile(uintptr(epfd), "lb-epoll"), sides: map[uint64]*side{}, buf: make([]byte, loopBufSize)}, nil
}

// detach returns a descriptor of c's socket that Go's poller does not
// watch, and closes c. Go's Close takes the socket out of its epoll set
// before it closes its descriptor, and the socket stays open through the
// duplicate (no FIN is sent).
func detach(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		derr = err
	}
	c.Close()
	return fd, derr
}

func (l *loop) add(cfd int, server *net.TCPConn, done func()) error {
	sfd, err := detach(server)
	if err != nil {
		closeFd(cfd, true)
		closeFd(sfd, true)
		return err
	}
	t := &tunnel{done: done}
	t.a = side{fd: cfd, peer: &t.b, t: t}
	t.b = side{fd: sfd, peer: &t.a, t: t}
	// The tunnel is new: nothing else sees it until it is in the table.
	l.tmu.Lock()
	defer l.tmu.Unlock()
	if l.closed {
		closeFd(cfd, true)
		closeFd(sfd, true)
		return ErrClosed
	}
	for _, s := range []*side{&t.a, &t.b} {
		l.lastID++
		s.id = l.lastID
		l.sides[s.id] = s
	}
	// Edge-triggered, and EPOLLRDHUP so that a FIN that came with the
	// last bytes is known without another read. Adding a socket that is
	// readable already reports it at once, so nothing sent before this
	// point is missed.
	const events = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET
	for _, s := range []*side{&t.a, &t.b} {
		// The event's 64 bits of user data (Fd and Pad here) carry the id.
		ev := unix.EpollEvent{Events: events, Fd: int32(uint32(s.id)), Pad: int32(uint32(s.id >> 32))}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			t.done = nil // the caller ends the count when add fails
			l.forgetLocked(t)
			t.end(true)
			return err
		}
	}
	return nil
}

func (l *loop) close() {
	l.mu.Lock()
	l.tmu.Lock()
	if !l.closed {
		l.closed = true
		for _, s := range l.sides {
			if s == &s.t.a {
				s.t.end(true)
			}
		}
		l.sides = map[uint64]*side{}
	}
	l.tmu.Unlock()
	l.mu.Unlock()
	// Wakes run, which returns; the descriptor is closed once it has.
	l.file.Close()
}

// run handles events until the loop is closed.
func (l *loop) run() {
	rc, err := l.file.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 128)
	// RawConn.Read calls f when the epoll descriptor is readable (it has
	// events) and parks the goroutine in between; it returns when f
	// returns true or the file is closed.
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return true
			}
			l.mu.Lock()
			l.tmu.Lock()
			closed := l.closed
			l.tmu.Unlock()
			if closed {
				l.mu.Unlock()
				return true
			}
			l.handle(events[:n])
			l.stepAgain()
			busy := len(l.again) > 0
			l.mu.Unlock()
			if n < len(events) && !busy {
				// Ready list emptied: any later event wakes Go's poller
				// (epoll passes each one up to the epoll that watches
				// it), so park rather than ask again.
				return false
			}
		}
	})
}

func (l *loop) handle(events []unix.EpollEvent) {
	for _, ev := range events {
		l.tmu.Lock()
		s := l.sides[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]
		l.tmu.Unlock()
		if s == nil {
			continue // a pair that ended earlier in this batch
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			s.readable = true
		}
		if ev.Events&unix.EPOLLRDHUP != 0 {
			s.rdhup = true
		}
		if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			s.hupErr = true
		}
		l.step(s.t)
	}
}

// stepAgain steps, once each, the tunnels that were left with bytes to
// read; those that still have more queue up again.
func (l *loop) stepAgain() {
	ts := l.again
	l.again = nil
	for _, t := range ts {
		t.queued = false
		if !t.ended {
			l.step(t)
		}
	}
}

// step moves whatever can move in both directions of t, and ends t when
// both directions are done or one failed.
func (l *loop) step(t *tunnel) {
	if !l.flush(&t.a) || !l.flush(&t.b) || !l.pump(&t.a) || !l.pump(&t.b) {
		l.tmu.Lock()
		l.forgetLocked(t)
		l.tmu.Unlock()
		t.end(true)
		return
	}
	if t.a.eof && t.b.eof && t.a.shutWr && t.b.shutWr {
		l.tmu.Lock()
		l.forgetLocked(t)
		l.tmu.Unlock()
		t.end(false)
	}
}

// flush writes the bytes s still owes to its socket, and passes the FIN
// on once they are out and its peer has ended. False on a write error.
func (l *loop) flush(s *side) bool {
	for len(s.pending) > 0 {
		n, err := unix.Write(s.fd, s.pending)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return true
		}
		if err != nil {
			return false
		}
		s.pending = s.pending[n:]
	}
	s.pending = nil
	if s.peer.eof && !s.shutWr {
		s.shutWr = true
		if !s.eof {
			// The other way is still open: FIN now, go on reading.
			// (On a socket the peer has reset this fails; the read side
			// reports that.)
			unix.Shutdown(s.fd, unix.SHUT_WR)
		}
		// Otherwise both ways are done: step closes both sockets, and a
		// close with nothing left unread sends the FIN itself.
	}
	return true
}

// pump copies from src to its peer until src has nothing more for now, the
// peer takes no more, or src ended. False on a read or write error.
func (l *loop) pump(src *side) bool {
	dst := src.peer
	for reads := 0; src.readable && !src.eof && len(dst.pending) == 0; reads++ {
		if reads == maxReadsPerStep {
			if t := src.t; !t.queued {
				t.queued = true
				l.again = append(l.again, t)
			}
			return true
		}
		n, err := unix.Read(src.fd, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			src.readable = false
			return true
		case err != nil:
			return false
		case n == 0:
			src.eof = true
			return l.flush(dst)
		}
		w, err := unix.Write(dst.fd, l.buf[:n])
		if err == unix.EAGAIN {
			w, err = 0, nil
		}
		if err != nil {
			return false
		}
		if w < n {
			// dst is full: keep the rest and read src again only once
			// dst has taken it (an EPOLLOUT edge on dst).
			dst.pending = append([]byte(nil), l.buf[w:n]...)
			return true
		}
		if n < len(l.buf) {
			switch {
			case src.hupErr:
				// Read on: the error, or the EOF, is for read(2) to say.
			case src.rdhup:
				// Those were the last bytes before the FIN: no read(2)
				// is needed to learn of the EOF.
				src.eof = true
				return l.flush(dst)
			default:
				// A short read emptied the socket; new bytes raise a
				// new edge.
				src.readable = false
				return true
			}
		}
	}
	return true
}

// forgetLocked takes t out of the table; tmu is held.
func (l *loop) forgetLocked(t *tunnel) {
	for _, s := range []*side{&t.a, &t.b} {
		delete(l.sides, s.id)
	}
}

// end closes both sockets of t, with a reset if abort (an error on either
// side, or Close), and ends its count on the backend. Closing a socket's
// last descriptor also takes it out of the epoll set.
func (t *tunnel) end(abort bool) {
	t.ended = true
	for _, s := range []*side{&t.a, &t.b} {
		closeFd(s.fd, abort)
		s.fd = -1
	}
	if t.done != nil {
		t.done()
		t.done = nil
	}
}

// closeFd closes a socket descriptor; with reset, SO_LINGER 0 makes the
// close send an RST, so the other end sees the failure as it would on a
// direct connection.
func closeFd(fd int, reset bool) {
	if fd < 0 {
		return
	}
	if reset {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	}
	unix.Close(fd)
}
