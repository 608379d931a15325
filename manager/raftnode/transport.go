package raftnode

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tcpStream is raft's stream layer over plain TCP. It exists, rather than
// raft.NewTCPTransport, because it listens before it advertises: with a
// bind port of 0 (tests) the advertised port is the one the kernel chose.
// The mutual-TLS layer will replace it behind the same interface.
type tcpStream struct {
	net.Listener
	advertise net.Addr
}

var _ raft.StreamLayer = (*tcpStream)(nil)

func (s *tcpStream) Addr() net.Addr { return s.advertise }

func (s *tcpStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return (&net.Dialer{Timeout: timeout}).Dial("tcp", string(addr))
}

// tcpAddr is an advertised address, which may name a host rather than an IP.
type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

// listenTCP listens on bind and works out the address peers dial: advertise
// if set (its port may be 0 or absent: the bound port), else the bound
// address, which must then be a specific IP.
func listenTCP(bind, advertise string) (*tcpStream, error) {
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
	return &tcpStream{Listener: ln, advertise: adv}, nil
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
