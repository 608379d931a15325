package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
)

// DefaultPort is the port the server listens on when Config.Port is 0: the
// one a resolv.conf `nameserver` line implies.
const DefaultPort = 53

// EphemeralPort, as Config.Port, lets the kernel choose a free port on each
// address (the same one for UDP and TCP). Tests use it; Addr tells the port.
const EphemeralPort = -1

// shutdownTimeout bounds how long Unlisten and Close wait for the queries
// in flight on a listener; forwards are cancelled first, so they end well
// before.
const shutdownTimeout = 5 * time.Second

// ErrClosed is returned by Listen after Close.
var ErrClosed = errors.New("dns: server closed")

// Config configures a Server.
type Config struct {
	// Port is the UDP and TCP port on every listening address (default
	// DefaultPort; EphemeralPort for one the kernel chooses).
	Port int
	// Upstreams are the resolvers asked for the names the server does not
	// know, in order, as "ip" or "ip:port" (port 53 by default). Empty: the
	// nameservers of ResolvConf, as they are; the server runs on the host,
	// so a resolver on the host's loopback such as systemd-resolved's
	// 127.0.0.53 is reachable.
	Upstreams []string
	// ResolvConf is the file read for the upstreams when Upstreams is
	// empty (default DefaultResolvConf). It is read once, by New.
	ResolvConf string
	// ForwardTimeout bounds a forwarded query over all upstreams (default
	// DefaultForwardTimeout); past it the container gets SERVFAIL.
	ForwardTimeout time.Duration
	// Logger gets the server's events under component=dns (default:
	// discarded).
	Logger *slog.Logger
}

// Server answers the containers of this node for service names, one
// listening address per network. Its methods are safe for concurrent use.
type Server struct {
	port int
	log  *slog.Logger
	fwd  *forwarder

	mu     sync.Mutex // guards closed, nets and the listeners' life
	closed bool
	nets   map[string]*netState

	// self holds the "ip:port" the server listens on, read by forwards
	// without s.mu: Unlisten holds s.mu while it waits for them.
	self atomic.Pointer[map[string]struct{}]

	lastForwardWarn atomic.Int64 // unix nanoseconds; see warnForward
}

// netState is one network: its records, and its listener when it has one.
// The records may come before the listener (the agent may push them before
// the bridge is up) and outlive a move of the listener to a new address.
type netState struct {
	id      string
	records atomic.Pointer[table]
	l       *listener
}

// listener is the UDP and TCP servers on one address for one network.
type listener struct {
	addr     netip.AddrPort
	udp, tcp *mdns.Server
	done     chan error // one value from each serving goroutine
	// ctx is cancelled when the listener stops, to abort the forwards in
	// flight rather than wait out their timeout.
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{} // forwards in flight, at most maxForwards
}

// New makes a server. It reads the host's resolvers now when
// cfg.Upstreams is empty; it listens nowhere until Listen.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "dns")
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = DefaultForwardTimeout
	}
	ups, problems := upstreamsFrom(cfg)
	for _, p := range problems {
		log.Warn("ignoring upstream resolver", "err", p)
	}
	if len(ups) == 0 {
		log.Warn("no upstream resolver: names other than services' will get SERVFAIL")
	}
	s := &Server{
		port: cfg.Port,
		log:  log,
		nets: map[string]*netState{},
	}
	s.self.Store(&map[string]struct{}{})
	s.fwd = &forwarder{upstreams: ups, timeout: cfg.ForwardTimeout, self: s.isSelf}
	return s
}

// Listen starts answering for a network on addr (the network's bridge
// gateway on this node), over UDP and TCP. Listening again on the same
// address does nothing; on another address, the server moves there, and
// keeps the old one if the new one cannot be had.
func (s *Server) Listen(network string, addr net.IP) error {
	ip, ok := toAddr(addr)
	if !ok {
		// The unspecified address is refused too: one listener on every
		// address could not tell the networks apart.
		return fmt.Errorf("dns: listen for network %s: invalid address %v", network, addr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	n := s.nets[network]
	if n != nil && n.l != nil && n.l.addr.Addr() == ip {
		return nil
	}
	if n == nil {
		n = &netState{id: network}
	}
	l, err := s.startListener(n, ip)
	if err != nil {
		return fmt.Errorf("dns: listen for network %s on %s: %w", network, ip, err)
	}
	s.nets[network] = n
	old := n.l
	n.l = l
	s.updateSelf()
	if old != nil {
		if err := old.stop(); err != nil {
			s.log.Warn("stop old listener", "network.id", network, "addr", old.addr, "err", err)
		}
	}
	s.log.Info("listening", "network.id", network, "addr", l.addr)
	return nil
}

// Unlisten stops answering for a network and forgets its records. A
// network the server does not know is no error.
func (s *Server) Unlisten(network string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nets[network]
	if n == nil {
		return nil
	}
	delete(s.nets, network)
	if n.l == nil {
		return nil
	}
	s.updateSelf()
	if err := n.l.stop(); err != nil {
		return fmt.Errorf("dns: unlisten network %s: %w", network, err)
	}
	s.log.Info("stopped listening", "network.id", network, "addr", n.l.addr)
	return nil
}

// SetRecords replaces the records of a network at once: the next query
// sees all of the new records and none of the old. It may come before
// Listen. Records it cannot use (an invalid name or address, another
// network's) are logged and skipped.
func (s *Server) SetRecords(network string, recs []Record) {
	t, problems := buildTable(network, recs)
	for _, p := range problems {
		s.log.Warn("skipping DNS record", "network.id", network, "err", p)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	n := s.nets[network]
	if n == nil {
		if len(recs) == 0 {
			return
		}
		n = &netState{id: network}
		s.nets[network] = n
	}
	if len(recs) == 0 && n.l == nil {
		delete(s.nets, network)
		return
	}
	n.records.Store(t)
}

// Addr returns the "ip:port" the server answers on for a network, or ""
// when it does not listen for it.
func (s *Server) Addr(network string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.nets[network]; n != nil && n.l != nil {
		return n.l.addr.String()
	}
	return ""
}

// Close stops every listener and forgets every network. Listen fails
// afterwards; closing again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for id, n := range s.nets {
		if n.l != nil {
			if err := n.l.stop(); err != nil {
				errs = append(errs, fmt.Errorf("network %s: %w", id, err))
			}
		}
	}
	s.nets = nil
	s.self.Store(&map[string]struct{}{})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dns: close: %w", err)
	}
	return nil
}

// updateSelf republishes the listening addresses; s.mu must be held.
func (s *Server) updateSelf() {
	m := make(map[string]struct{}, len(s.nets))
	for _, n := range s.nets {
		if n.l != nil {
			m[n.l.addr.String()] = struct{}{}
		}
	}
	s.self.Store(&m)
}

// isSelf reports whether addr ("ip:port", canonical) is one the server
// listens on.
func (s *Server) isSelf(addr string) bool {
	_, ok := (*s.self.Load())[addr]
	return ok
}

// startListener binds addr and serves network n there.
func (s *Server) startListener(n *netState, ip netip.Addr) (*listener, error) {
	uc, tl, err := bind(ip, s.port)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{
		addr:   uc.LocalAddr().(*net.UDPAddr).AddrPort(),
		done:   make(chan error, 2),
		ctx:    ctx,
		cancel: cancel,
		sem:    make(chan struct{}, maxForwards),
	}
	l.addr = netip.AddrPortFrom(l.addr.Addr().Unmap(), l.addr.Port())
	h := &handler{s: s, n: n, l: l}
	l.udp = &mdns.Server{
		PacketConn: uc,
		Handler:    h,
		// Queries with EDNS0 options (cookies, padding) can pass 512
		// bytes; the default buffer would cut them.
		UDPSize:       mdns.DefaultMsgSize,
		MsgAcceptFunc: acceptQuery,
	}
	l.tcp = &mdns.Server{Listener: tl, Handler: h, MsgAcceptFunc: acceptQuery}
	if err := s.serve(l, l.udp); err != nil {
		cancel()
		uc.Close()
		tl.Close()
		return nil, err
	}
	if err := s.serve(l, l.tcp); err != nil {
		cancel()
		tl.Close()
		_ = l.udp.Shutdown()
		<-l.done
		return nil, err
	}
	return l, nil
}

// serve runs srv until it is shut down and returns once it is serving, so
// that a Shutdown right after cannot come before the start (miekg/dns
// refuses to shut down a server that has not started, which would leave it
// running).
func (s *Server) serve(l *listener, srv *mdns.Server) error {
	started := make(chan struct{})
	ended := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	go func() {
		err := srv.ActivateAndServe()
		if err != nil {
			s.log.Error("dns listener failed", "addr", l.addr, "err", err)
		}
		select {
		case <-started:
			l.done <- err
		default:
			ended <- err
		}
	}()
	select {
	case <-started:
		return nil
	case err := <-ended:
		if err == nil {
			err = errors.New("server stopped before it started")
		}
		return err
	}
}

// stop shuts the listener down: it aborts the forwards in flight, closes
// the sockets and waits for the handlers to return.
func (l *listener) stop() error {
	l.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	for _, srv := range []*mdns.Server{l.udp, l.tcp} {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for range 2 {
		select {
		case <-l.done: // its error, if any, was logged when it came
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("listener on %s: %w", l.addr, ctx.Err()))
			return errors.Join(errs...)
		}
	}
	return errors.Join(errs...)
}

// bind opens the UDP and TCP sockets on ip:port. With EphemeralPort the
// kernel picks the UDP port and TCP takes the same one, retried a few
// times in case another program holds that port for TCP.
func bind(ip netip.Addr, port int) (*net.UDPConn, *net.TCPListener, error) {
	tries := 1
	switch {
	case port == EphemeralPort:
		port, tries = 0, 10
	case port <= 0 || port > 65535:
		return nil, nil, fmt.Errorf("bad port %d", port)
	}
	for {
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
		if err != nil {
			return nil, nil, err
		}
		got := uc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		tl, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, got)))
		if err == nil {
			return uc, tl, nil
		}
		uc.Close()
		if tries--; tries == 0 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// acceptQuery lets only standard queries through. miekg/dns's default also
// accepts NOTIFY, which means nothing to this server and must not be
// forwarded to the host's resolvers; it gets NOTIMP like any other opcode.
func acceptQuery(dh mdns.Header) mdns.MsgAcceptAction {
	action := mdns.DefaultMsgAcceptFunc(dh)
	if opcode := int(dh.Bits>>11) & 0xF; action == mdns.MsgAccept && opcode != mdns.OpcodeQuery {
		return mdns.MsgRejectNotImplemented
	}
	return action
}
