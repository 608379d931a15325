package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
)

// maxRecvMsgSize lets `service ps` of big clusters through; gRPC's 4 MiB
// default is too small for a few thousand tasks with their specs.
const maxRecvMsgSize = 64 << 20

// endpoint is a parsed -H value.
type endpoint struct {
	network string // "unix" or "tcp"
	addr    string
}

// parseHost accepts unix:///path, tcp://host[:port] and bare host:port
// (tcp), as docker's -H does.
func parseHost(h string) (endpoint, error) {
	switch {
	case strings.HasPrefix(h, "unix://"):
		p := strings.TrimPrefix(h, "unix://")
		if p == "" {
			return endpoint{}, fmt.Errorf("invalid host %q: missing socket path", h)
		}
		return endpoint{"unix", p}, nil
	case strings.HasPrefix(h, "tcp://"):
		u, err := url.Parse(h)
		if err != nil || u.Host == "" {
			return endpoint{}, fmt.Errorf("invalid host %q", h)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "2377")
		}
		return endpoint{"tcp", host}, nil
	case strings.Contains(h, "://"):
		return endpoint{}, fmt.Errorf("invalid host %q: only unix:// and tcp:// are supported", h)
	case strings.HasPrefix(h, "/"):
		return endpoint{"unix", h}, nil
	default:
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "2377")
		}
		return endpoint{"tcp", h}, nil
	}
}

// recordingDialer dials the manager and remembers the last dial failure, so
// that an Unavailable status can be told apart: no manager at all (the
// friendly "Cannot connect" text) versus a manager that is up but says it
// is unavailable (e.g. no Raft leader).
type recordingDialer struct {
	ep  endpoint
	mu  sync.Mutex
	err error
}

func (d *recordingDialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, d.ep.network, d.ep.addr)
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
	return c, err
}

func (d *recordingDialer) lastErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// control returns the control client, connecting on first use: commands
// that never talk to a manager (version, help, flag errors) never dial.
func (a *App) control() (controlv1.ControlClient, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ctl != nil {
		return a.ctl, nil
	}
	host := a.resolvedHost()
	ep, err := parseHost(host)
	if err != nil {
		return nil, err
	}
	d := &recordingDialer{ep: ep}
	m := &errorMapper{host: host, dialer: d}
	// TODO(security): tcp:// is dialled in plaintext until client
	// certificates exist; DESIGN.md wants mTLS on 2377.
	conn, err := grpc.NewClient("passthrough:///shoal-manager",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithChainUnaryInterceptor(m.unary),
		grpc.WithChainStreamInterceptor(m.stream),
	)
	if err != nil {
		return nil, fmt.Errorf("invalid host %q: %v", host, err)
	}
	a.conn, a.dialer = conn, d
	a.ctl = controlv1.NewControlClient(conn)
	return a.ctl, nil
}

func (a *App) closeConn() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn != nil {
		_ = a.conn.Close()
	}
	a.conn, a.ctl, a.dialer = nil, nil, nil
}

// connectError is "no manager answers at this address".
type connectError struct {
	host       string
	permission bool
}

func (e *connectError) Error() string {
	if e.permission {
		return fmt.Sprintf("permission denied while trying to connect to the shoal manager socket at %s: the socket is root-only (try sudo)", e.host)
	}
	return fmt.Sprintf("Cannot connect to the shoal manager at %s. Is the manager running? "+
		"(start it with `shoal swarm init`, or `shoal-manager --data-dir …` after a reboot)", e.host)
}

// rpcError is a manager's error in plain words; code classifies it.
type rpcError struct {
	code codes.Code
	msg  string
}

func (e *rpcError) Error() string { return e.msg }

// errorMapper converts gRPC statuses into rpcError/connectError at the
// edge of the connection, so no command ever prints "rpc error: code = …".
type errorMapper struct {
	host   string
	dialer *recordingDialer
}

func (m *errorMapper) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return m.mapErr(invoker(ctx, method, req, reply, cc, opts...))
}

func (m *errorMapper) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, m.mapErr(err)
	}
	return &mappedStream{ClientStream: s, m: m}, nil
}

type mappedStream struct {
	grpc.ClientStream
	m *errorMapper
}

func (s *mappedStream) RecvMsg(v any) error {
	err := s.ClientStream.RecvMsg(v)
	if err == io.EOF {
		return err
	}
	return s.m.mapErr(err)
}

func (m *errorMapper) mapErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if derr := m.dialer.lastErr(); derr != nil {
			if errors.Is(derr, syscall.EACCES) || errors.Is(derr, syscall.EPERM) {
				return &connectError{host: m.host, permission: true}
			}
			return &connectError{host: m.host}
		}
		if msg == "" {
			msg = "the manager is unavailable"
		}
	case codes.Canceled:
		msg = "operation cancelled"
	case codes.DeadlineExceeded:
		msg = "timed out waiting for the manager"
	case codes.Unimplemented:
		// An older manager, or an RPC still being written.
		msg = "not implemented by this manager yet"
	default:
		if msg == "" {
			msg = strings.ToLower(st.Code().String())
		}
	}
	return &rpcError{code: st.Code(), msg: msg}
}

func errCode(err error) codes.Code {
	var re *rpcError
	if errors.As(err, &re) {
		return re.code
	}
	return codes.Unknown
}

func isNotFound(err error) bool { return errCode(err) == codes.NotFound }

// notFoundAs rewords a NotFound into Docker's text for the object kind
// ("no such service: web") and passes other errors through.
func notFoundAs(err error, kind, ref string) error {
	if isNotFound(err) {
		return &rpcError{code: codes.NotFound, msg: fmt.Sprintf("no such %s: %s", kind, ref)}
	}
	return err
}

// firstConnectError returns a connection failure among errs, if any: when
// the manager is gone every per-argument error is the same, and one
// "Cannot connect" line says it best.
func firstConnectError(errs []error) error {
	for _, e := range errs {
		var ce *connectError
		if errors.As(e, &ce) {
			return ce
		}
	}
	return nil
}
