package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Backend is one task endpoint behind a published port.
type Backend struct {
	// TaskID names the task, so that Drain can find its endpoints on
	// every port at once.
	TaskID string
	// Addr is the task's ip:port on its network, as net.Dial takes it.
	Addr string
}

// PortConfig describes one published port on this node.
type PortConfig struct {
	// Port is the published port; 0 is refused, since the cluster
	// allocates published ports and every node must listen on the same one.
	Port uint16
	// Protocol is "tcp" or "udp".
	Protocol string
	// ProxyProtocol is "" (none), "v1" (text, TCP only) or "v2" (binary;
	// for UDP a header before every datagram): the header that tells the
	// task the client's address.
	ProxyProtocol string
	// ListenAddr is the address to listen on; "" means every address of
	// the node.
	ListenAddr string
}

// ErrPortInUse is what a [*PortInUseError] matches with errors.Is.
var ErrPortInUse = errors.New("port already in use")

// ErrClosed is returned by Publish after Close.
var ErrClosed = errors.New("load balancer closed")

// PortInUseError says that a port cannot be published on this node because
// something listens on it already. Its message names the port, since the
// user sees it as the reason a task or a deploy failed.
type PortInUseError struct {
	Port     uint16
	Protocol string
	// ByShoal is true when this balancer has the port published already
	// (another service, or a mode host task of another service).
	ByShoal bool
	// Err is the error of bind(2), nil when ByShoal.
	Err error
}

// Error names the port and protocol, as the user is to read it.
func (e *PortInUseError) Error() string {
	msg := fmt.Sprintf("port %d/%s is already in use on this node", e.Port, e.Protocol)
	if e.ByShoal {
		msg += " (published by shoal)"
	}
	return msg
}

// Is makes errors.Is(err, ErrPortInUse) true.
func (e *PortInUseError) Is(target error) bool { return target == ErrPortInUse }

// Unwrap returns the bind error.
func (e *PortInUseError) Unwrap() error { return e.Err }

// Defaults of the tunables below. Short, because a task that refuses or
// does not answer within a second on a cluster network is not going to be
// the client's best bet, and another task is.
const (
	defaultDialTimeout = time.Second
	defaultQuarantine  = time.Second
	defaultUDPIdle     = 30 * time.Second
	// Each UDP flow holds a socket and a goroutine; a cap keeps a flood of
	// spoofed source addresses from exhausting the node's descriptors.
	defaultMaxUDPFlows = 16384
	// How long a drained task id is remembered, so that a SetBackends
	// built from a stale view of the tasks cannot put it back.
	drainedMemory = 10 * time.Minute
)

type portKey struct {
	port  uint16
	proto string
}

func (k portKey) String() string { return strconv.Itoa(int(k.port)) + "/" + k.proto }

// listener is a published port: a TCP or UDP socket with its goroutines.
type listener interface {
	// stop closes the socket, so the port is free when it returns. TCP
	// connections go on (they live in the event loops, which Close
	// ends); UDP flows end with it.
	stop()
}

// Balancer is the ingress load balancer of one node. Its methods are safe
// for concurrent use.
type Balancer struct {
	log *slog.Logger

	// Tunables, set by New; tests in this package shorten them.
	dialTimeout time.Duration
	quarantine  time.Duration
	udpIdle     time.Duration
	maxUDPFlows int

	// ctx is cancelled by Close and aborts dials in progress.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards the maps below and the pools' member maps; the data path
	// never takes it (it reads each pool's atomic snapshot).
	mu        sync.Mutex
	closed    bool
	pools     map[portKey]*pool
	listeners map[portKey]listener
	drained   map[string]time.Time

	// eng copies the bytes of established TCP connections, of published
	// and of unpublished ports alike; started by the first Publish.
	eng *engine
	// wg counts every goroutine the balancer starts.
	wg sync.WaitGroup
}

// New returns a Balancer with no published port. A nil logger discards.
func New(logger *slog.Logger) *Balancer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Balancer{
		log:         logger.With("component", "lb"),
		dialTimeout: defaultDialTimeout,
		quarantine:  defaultQuarantine,
		udpIdle:     defaultUDPIdle,
		maxUDPFlows: defaultMaxUDPFlows,
		ctx:         ctx,
		cancel:      cancel,
		pools:       map[portKey]*pool{},
		listeners:   map[portKey]listener{},
		drained:     map[string]time.Time{},
	}
}

func normProto(proto string) (string, error) {
	switch p := strings.ToLower(proto); p {
	case "tcp", "udp":
		return p, nil
	case "":
		// Compose and Docker default to tcp.
		return "tcp", nil
	default:
		return "", fmt.Errorf("protocol %q: want tcp or udp", proto)
	}
}

// Publish starts listening on pc.Port for pc.Protocol and spreads what
// arrives over the port's backends (none until SetBackends; connections
// are then refused). If the port is taken on this node it returns a
// [*PortInUseError] naming it.
func (b *Balancer) Publish(pc PortConfig) error {
	proto, err := normProto(pc.Protocol)
	if err != nil {
		return fmt.Errorf("publish port %d: %w", pc.Port, err)
	}
	key := portKey{pc.Port, proto}
	if pc.Port == 0 {
		return fmt.Errorf("publish port 0/%s: a published port must be given", proto)
	}
	var version byte
	switch pc.ProxyProtocol {
	case "":
	case "v1":
		if proto == "udp" {
			return fmt.Errorf("publish port %s: PROXY protocol v1 has no UDP form; use v2", key)
		}
		version = 1
	case "v2":
		version = 2
	default:
		return fmt.Errorf("publish port %s: PROXY protocol %q: want \"\", \"v1\" or \"v2\"", key, pc.ProxyProtocol)
	}
	if pc.ListenAddr != "" {
		if ip := net.ParseIP(pc.ListenAddr); ip == nil {
			return fmt.Errorf("publish port %s: listen address %q is not an IP address", key, pc.ListenAddr)
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if _, ok := b.listeners[key]; ok {
		return &PortInUseError{Port: pc.Port, Protocol: proto, ByShoal: true}
	}
	if proto == "tcp" && b.eng == nil {
		// A loop per CPU Go may use, like nginx's "worker_processes
		// auto": a loop keeps at most one core busy, and while the kernel
		// runs a task on one core the others still move bytes.
		eng, err := newEngine(runtime.GOMAXPROCS(0))
		if err != nil {
			return fmt.Errorf("publish port %s: start the event loops: %w", key, err)
		}
		eng.start(&b.wg)
		b.eng = eng
	}
	p := b.poolLocked(key)
	addr := net.JoinHostPort(pc.ListenAddr, strconv.Itoa(int(pc.Port)))
	var l listener
	if proto == "tcp" {
		l, err = b.listenTCP(key, addr, version, p)
	} else {
		l, err = b.listenUDP(key, addr, pc.ListenAddr, version, p)
	}
	if err != nil {
		return bindError(key, pc.ListenAddr, err)
	}
	b.listeners[key] = l
	b.log.Info("port published", "port", key.String(), "listen.addr", pc.ListenAddr, "proxy_protocol", pc.ProxyProtocol)
	return nil
}

// bindError turns the error of listen into one a user can act on.
func bindError(key portKey, listenAddr string, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return &PortInUseError{Port: key.port, Protocol: key.proto, Err: err}
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("publish port %s: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE): %w", key, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("publish port %s: %s is not an address of this node: %w", key, listenAddr, err)
	}
	return fmt.Errorf("publish port %s: %w", key, err)
}

// Unpublish closes the port's socket (the port is free for others when it
// returns) and forgets its backends. TCP connections already established
// go on until either side closes them; UDP flows end at once, since there
// is no connection to finish.
func (b *Balancer) Unpublish(port uint16, proto string) error {
	proto, err := normProto(proto)
	if err != nil {
		return fmt.Errorf("unpublish port %d: %w", port, err)
	}
	key := portKey{port, proto}
	b.mu.Lock()
	l, ok := b.listeners[key]
	delete(b.listeners, key)
	if p := b.pools[key]; p != nil {
		p.replace(nil)
		delete(b.pools, key)
	}
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("unpublish port %s: not published", key)
	}
	l.stop()
	b.log.Info("port unpublished", "port", key.String())
	return nil
}

// Publishes reports whether the balancer has port/proto published.
func (b *Balancer) Publishes(port uint16, proto string) bool {
	proto, err := normProto(proto)
	if err != nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.listeners[portKey{port, proto}]
	return ok
}

// SetBackends replaces the rotation of a port with bs; it is meant to be
// called whenever a task behind the port reaches RUNNING or ends. It may
// come before Publish. Backends of tasks that were drained are left out,
// so a list built before a Drain cannot bring the task back. The next
// connection after SetBackends returns already sees the new rotation;
// connections established to backends no longer listed go on.
func (b *Balancer) SetBackends(port uint16, proto string, bs []Backend) {
	proto, err := normProto(proto)
	if err != nil {
		b.log.Error("set backends: bad protocol", "port", port, "error", err)
		return
	}
	key := portKey{port, proto}
	keep := make([]Backend, 0, len(bs))
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneDrainedLocked(time.Now())
	for _, be := range bs {
		if _, gone := b.drained[be.TaskID]; gone && be.TaskID != "" {
			continue
		}
		if _, _, err := net.SplitHostPort(be.Addr); err != nil {
			b.log.Error("set backends: bad address, skipped", "port", key.String(), "task.id", be.TaskID, "backend.addr", be.Addr, "error", err)
			continue
		}
		keep = append(keep, be)
	}
	b.poolLocked(key).replace(keep)
	b.log.Debug("backends set", "port", key.String(), "backends", len(keep))
}

// Drain takes a task out of every rotation at once; it is meant to be
// called when the task is told to stop, before its container gets the stop
// signal. When Drain returns, no new connection will reach the task: dials
// that picked it just before are waited for (at most the dial timeout), so
// that every connection the task will ever get is already established.
// Established connections go on until they end.
func (b *Balancer) Drain(taskID string) {
	if taskID == "" {
		return
	}
	b.mu.Lock()
	now := time.Now()
	b.pruneDrainedLocked(now)
	b.drained[taskID] = now
	var out []*backend
	for _, p := range b.pools {
		out = append(out, p.drain(taskID)...)
	}
	b.mu.Unlock()
	// Outside the lock: dials time out after dialTimeout at most, and
	// other ports must not wait for this one.
	waitDials(out, b.dialTimeout+100*time.Millisecond)
	if len(out) > 0 {
		b.log.Info("task drained", "task.id", taskID, "backends", len(out))
	}
}

func (b *Balancer) pruneDrainedLocked(now time.Time) {
	for id, t := range b.drained {
		if now.Sub(t) > drainedMemory {
			delete(b.drained, id)
		}
	}
}

func (b *Balancer) poolLocked(key portKey) *pool {
	p := b.pools[key]
	if p == nil {
		p = newPool()
		b.pools[key] = p
	}
	return p
}

// Close unpublishes every port, closes every connection and flow, and
// waits for all of the balancer's goroutines. Publish fails afterwards.
func (b *Balancer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ls := b.listeners
	b.listeners = map[portKey]listener{}
	for _, p := range b.pools {
		p.replace(nil)
	}
	b.pools = map[portKey]*pool{}
	eng := b.eng
	b.mu.Unlock()
	b.cancel()
	for _, l := range ls {
		l.stop()
	}
	if eng != nil {
		// Resets every established connection; a connection handed
		// over after this is reset by add.
		eng.close()
	}
	b.wg.Wait()
	return nil
}
