package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// BenchmarkHandshake measures a full mutual-TLS 1.3 handshake between two
// managers over net.Pipe: both chains verified, identities read, the
// revocation check run. No session resumption, as in production.
func BenchmarkHandshake(b *testing.B) {
	c := newTestCA(b, "c", testNow)
	srv := liveNode(b, c, "mgr1", RoleManager)
	cli := liveNode(b, c, "mgr2", RoleManager)
	revoked := func(NodeCert) bool { return false }
	srvCfg := ServerTLS(c.Pool(), srv.id, Policy{Revoked: revoked, Roles: []string{RoleManager}})
	cliCfg := ClientTLS(c.Pool(), cli.id, ManagerName)
	b.ReportAllocs()
	for b.Loop() {
		c1, c2 := net.Pipe()
		errc := make(chan error, 1)
		go func() {
			s := tls.Server(c1, srvCfg)
			errc <- s.Handshake()
		}()
		cl := tls.Client(c2, cliCfg)
		if err := cl.Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		c1.Close()
		c2.Close()
	}
}

func BenchmarkIssue(b *testing.B) {
	c := newTestCA(b, "c", testNow)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Issue(key.Public(), "node1", RoleWorker, testNow, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJoinCrypto is a join's cryptography end to end: the node's key
// and request, the manager's signature, the node's key pair.
func BenchmarkJoinCrypto(b *testing.B) {
	c := newTestCA(b, "c", testNow)
	b.ReportAllocs()
	for b.Loop() {
		key, csr, err := NewKey()
		if err != nil {
			b.Fatal(err)
		}
		certPEM, err := c.SignCSR(csr, "node1", RoleWorker, testNow, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		keyPEM, err := MarshalKey(key)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := X509KeyPair(certPEM, keyPEM, c.CertPEM); err != nil {
			b.Fatal(err)
		}
	}
}
