package raftnode

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/manager/ca"
)

// tlsFor issues a certificate for node id with role and returns Raft's
// server and client configs for it, as a manager builds them.
func tlsFor(t *testing.T, c *ca.CA, id, role string) func(*Config) {
	t.Helper()
	key, _, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.Issue(key.Public(), id, role, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.X509KeyPair(certPEM, keyPEM, c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := ca.NewIdentity(pair)
	if err != nil {
		t.Fatal(err)
	}
	return func(cfg *Config) {
		cfg.ServerTLS = ca.ServerTLS(c.Pool(), ident, ca.Policy{Roles: []string{ca.RoleManager}})
		cfg.ClientTLS = ca.ClientTLS(c.Pool(), ident, ca.ManagerName)
	}
}

// TestMutualTLS: managers with certificates of the swarm's CA replicate;
// a node with a worker certificate, or one of another CA, gets nothing.
func TestMutualTLS(t *testing.T) {
	c, err := ca.New("cluster1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.New("cluster2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := open(t, t.TempDir(), "m1", true, tlsFor(t, c, "m1", ca.RoleManager))
	waitLeader(t, 5*time.Second, n1)
	n2, s2 := open(t, t.TempDir(), "m2", false, tlsFor(t, c, "m2", ca.RoleManager))
	if err := n1.AddVoter(n2.ID(), n2.Addr()); err != nil {
		t.Fatal(err)
	}
	last, err := n1.Propose(ctx(t), deployBatch("svc", 3))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "m2 caught up over TLS", func() bool { return s2.Index() >= last })

	// Neither a worker's certificate nor another swarm's reaches Raft.
	for _, bad := range []struct {
		name string
		mod  func(*Config)
	}{
		{"worker", tlsFor(t, c, "w1", ca.RoleWorker)},
		{"other CA", tlsFor(t, other, "x1", ca.RoleManager)},
	} {
		var cfg Config
		bad.mod(&cfg)
		conn, err := tls.Dial("tcp", n1.Addr(), cfg.ClientTLS)
		if err == nil {
			// TLS 1.3: the server's refusal arrives on the first read.
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil {
			t.Errorf("%s certificate: connected to Raft", bad.name)
		} else {
			t.Logf("%s certificate refused: %v", bad.name, ca.Explain(err))
		}
	}
	// Plain TCP gets no answer either.
	n3, s3 := open(t, t.TempDir(), "m3", false)
	if err := n1.AddVoter(n3.ID(), n3.Addr()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if s3.Index() != 0 {
		t.Errorf("a node without TLS got entries up to %d", s3.Index())
	}
	_ = n1.RemoveServer(n3.ID())
}
