package raftnode

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tcpStream is raft's stream layer over TCP, with mutual TLS when
// configured. It exists, rather than raft.NewTCPTransport, because it
// listens before it advertises: with a bind port of 0 (tests) the
// advertised port is the one the kernel chose.
type tcpStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config // nil: plain TCP
}

var _ raft.StreamLayer = (*tcpStream)(nil)

func (s *tcpStream) Addr() net.Addr { return s.advertise }

func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.client == nil {
		return d.Dial("tcp", string(addr))
	}
	// The handshake is part of the dial, so that a peer that refuses
	// this node's certificate fails here, within the timeout, and not on
	// raft's first read.
	c, err := tls.DialWithDialer(d, "tcp", string(addr), s.client)
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	return c, nil
}

// tcpAddr is an advertised address, which may name a host rather than an IP.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// listenTCP listens on bind and works out the address peers dial: advertise
// if set (its port may be 0 or absent: the bound port), else the bound
// address, which must then be a specific IP.
// With server and client TLS configs, every connection is mutual TLS.
func listenTCP(bind, advertise string, server, client *tls.Config) (*tcpStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	adv, err := advertiseAddr(bound, advertise)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if server != nil {
		ln = tls.NewListener(ln, server)
	}
	return &tcpStream{Listener: ln, advertise: adv, client: client}, nil
}

func advertiseAddr(bound *net.TCPAddr, advertise string) (net.Addr, error) {
	if advertise == "" {
		if bound.IP.IsUnspecified() {
			return nil, fmt.Errorf("raft bind address %s is not one peers can dial: set the advertise address", bound)
		}
		return bound, nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		// A bare host: the bound port.
		host, port = advertise, "0"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return nil, fmt.Errorf("raft advertise address %q is not one peers can dial", advertise)
	}
	if port == "" || port == "0" {
		port = fmt.Sprint(bound.Port)
	}
	return tcpAddr(net.JoinHostPort(host, port)), nil
}
