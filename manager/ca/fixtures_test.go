package ca

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// testNow is the clock of tests that do not reach crypto/tls, which reads
// the real one.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestCA(t testing.TB, cluster string, now time.Time) *CA {
	t.Helper()
	c, err := New(cluster, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testNode is a node's identity as a test needs it.
type testNode struct {
	id      *Identity
	leaf    *x509.Certificate
	certPEM []byte
	keyPEM  []byte
}

func issueNode(t testing.TB, c *CA, nodeID, role string, now time.Time, validity time.Duration) testNode {
	t.Helper()
	key, csr, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.SignCSR(csr, nodeID, role, now, validity)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := X509KeyPair(certPEM, keyPEM, c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(cert)
	if err != nil {
		t.Fatal(err)
	}
	return testNode{id: id, leaf: cert.Leaf, certPEM: certPEM, keyPEM: keyPEM}
}

// liveNode is a node whose certificate is valid on the real clock.
func liveNode(t testing.TB, c *CA, nodeID, role string) testNode {
	return issueNode(t, c, nodeID, role, time.Now(), time.Hour)
}

// handshakeResult is what each side of a connection saw: its handshake
// error, or the error of its first read or write, under Explain.
type handshakeResult struct {
	server, client           error
	serverState, clientState tls.ConnectionState
}

// handshake connects a client and a server over net.Pipe. After a
// successful handshake the server writes a byte and the client reads it,
// since under TLS 1.3 a client learns that the server refused its
// certificate only on its first read.
func handshake(t testing.TB, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	c1, c2 := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	c1.SetDeadline(deadline)
	c2.SetDeadline(deadline)
	srv, cli := tls.Server(c1, serverCfg), tls.Client(c2, clientCfg)
	var r handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Close the pipe, not the TLS conn: close_notify on a pipe
		// nobody reads blocks for tls's five-second timeout.
		defer c1.Close()
		if err := srv.Handshake(); err != nil {
			r.server = Explain(err)
			return
		}
		r.serverState = srv.ConnectionState()
		if _, err := srv.Write([]byte{1}); err != nil {
			r.server = Explain(err)
		}
	}()
	func() {
		defer c2.Close()
		if err := cli.Handshake(); err != nil {
			r.client = Explain(err)
			return
		}
		var b [1]byte
		if _, err := cli.Read(b[:]); err != nil {
			r.client = Explain(err)
			return
		}
		r.clientState = cli.ConnectionState()
	}()
	<-done
	return r
}
