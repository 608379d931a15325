package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestHandshake(t *testing.T) {
	c := newTestCA(t, "cluster1", testNow)
	other := newTestCA(t, "cluster2", testNow)
	now := time.Now()

	mgr := liveNode(t, c, "mgr1", RoleManager)
	mgr2 := liveNode(t, c, "mgr2", RoleManager)
	worker := liveNode(t, c, "wrk1", RoleWorker)
	removed := liveNode(t, c, "gone1", RoleWorker)
	expired := issueNode(t, c, "old1", RoleWorker, now.Add(-48*time.Hour), time.Hour)
	future := issueNode(t, c, "fut1", RoleWorker, now.Add(48*time.Hour), time.Hour)
	stranger := liveNode(t, other, "wrk9", RoleWorker)
	expiredMgr := issueNode(t, c, "mgr9", RoleManager, now.Add(-48*time.Hour), time.Hour)

	revoked := func(n NodeCert) bool { return n.NodeID == "gone1" }
	dispatcher := Policy{Revoked: revoked, AllowAnonymous: true}
	raft := Policy{Revoked: revoked, Roles: []string{RoleManager}}

	tests := []struct {
		name       string
		server     testNode
		policy     Policy
		client     *testNode // nil: no certificate
		serverName string
		// Expected: the node id each side reads from the other ("" for an
		// anonymous client), or the error class and message on each side.
		wantClientID string
		serverErr    error
		serverMsg    string
		clientErr    error
		clientMsg    string
	}{
		{name: "manager to manager on the raft port", server: mgr, policy: raft, client: &mgr2, wantClientID: "mgr2"},
		{name: "worker to the dispatcher", server: mgr, policy: dispatcher, client: &worker, wantClientID: "wrk1"},
		{name: "joiner without certificate, allowed", server: mgr, policy: dispatcher, client: nil, wantClientID: ""},
		{
			name: "joiner without certificate, not allowed", server: mgr, policy: raft, client: nil,
			serverErr: nil, serverMsg: "didn't provide a certificate",
			clientErr: ErrRefused, clientMsg: "has not joined the swarm",
		},
		{
			name: "expired client certificate", server: mgr, policy: dispatcher, client: &expired,
			serverErr: ErrExpired, serverMsg: "certificate of node old1 expired at " + stamp(expired.leaf.NotAfter),
			clientErr: ErrExpired, clientMsg: "refused this node's certificate as expired",
		},
		{
			name: "client certificate not yet valid", server: mgr, policy: dispatcher, client: &future,
			serverErr: ErrNotYetValid, serverMsg: "certificate of node fut1 is not valid before " + stamp(future.leaf.NotBefore),
			clientErr: ErrExpired, // TLS has one alert for both
		},
		{
			name: "client certificate of another swarm", server: mgr, policy: dispatcher, client: &stranger,
			serverErr: ErrWrongCA, serverMsg: "certificate of node wrk9 (cluster cluster2) was not issued by this swarm's CA",
			clientErr: ErrWrongCA, clientMsg: "issued by another swarm's CA",
		},
		{
			name: "revoked node", server: mgr, policy: dispatcher, client: &removed,
			serverErr: ErrRevoked, serverMsg: "certificate of node gone1 (serial " + removed.id.Node().Serial + ") has been revoked (node removed from the swarm)",
			clientErr: ErrRefused, clientMsg: "may have been removed from the swarm",
		},
		{
			name: "worker on the raft port", server: mgr, policy: raft, client: &worker,
			serverErr: ErrBadCertificate, serverMsg: "node wrk1 is a worker; only [manager] may connect here",
			clientErr: ErrRefused,
		},
		{
			name: "worker answering as a manager", server: worker, policy: dispatcher, client: &mgr,
			serverErr: ErrRefused,
			clientErr: ErrBadCertificate, clientMsg: "node wrk1 is not a manager: its certificate does not name shoal-manager",
		},
		{
			name: "expired server certificate", server: expiredMgr, policy: dispatcher, client: &worker,
			serverErr: ErrRefused,
			clientErr: ErrExpired, clientMsg: "certificate of node mgr9 expired at " + stamp(expiredMgr.leaf.NotAfter),
		},
		{name: "dial a node by its id", server: worker, policy: dispatcher, client: &mgr, serverName: "wrk1", wantClientID: "mgr1"},
		{
			name: "dial a node by another id", server: worker, policy: dispatcher, client: &mgr, serverName: "wrk2",
			serverErr: ErrRefused,
			clientErr: ErrBadCertificate, clientMsg: "certificate of node wrk1 is not valid for wrk2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var clientID *Identity
			if tt.client != nil {
				clientID = tt.client.id
			}
			r := handshake(t, ServerTLS(c.Pool(), tt.server.id, tt.policy), ClientTLS(c.Pool(), clientID, tt.serverName))
			checkErr(t, "server", r.server, tt.serverErr, tt.serverMsg)
			checkErr(t, "client", r.client, tt.clientErr, tt.clientMsg)
			if tt.serverMsg != "" || tt.clientMsg != "" || tt.serverErr != nil || tt.clientErr != nil {
				return
			}
			got, ok := PeerIdentity(r.serverState)
			if ok != (tt.wantClientID != "") || got.NodeID != tt.wantClientID {
				t.Errorf("server's PeerIdentity = %+v, %v; want node %q", got, ok, tt.wantClientID)
			}
			if ok && got.ClusterID != "cluster1" {
				t.Errorf("server's PeerIdentity cluster = %q", got.ClusterID)
			}
			srv, ok := PeerIdentity(r.clientState)
			if !ok || srv != tt.server.id.Node() {
				t.Errorf("client's PeerIdentity = %+v, %v; want %+v", srv, ok, tt.server.id.Node())
			}
			if r.serverState.Version != tls.VersionTLS13 {
				t.Errorf("TLS version %x, want 1.3", r.serverState.Version)
			}
		})
	}
}

// checkErr wants err to be nil, or of class want with a message containing
// msg (a class of nil with a message: any error with that message).
func checkErr(t *testing.T, side string, err, want error, msg string) {
	t.Helper()
	switch {
	case want == nil && msg == "":
		if err != nil {
			t.Errorf("%s: %v", side, err)
		}
	case err == nil:
		t.Errorf("%s: no error, want %v %q", side, want, msg)
	case want != nil && !errors.Is(err, want):
		t.Errorf("%s: %v, want class %v", side, err, want)
	case !strings.Contains(err.Error(), msg):
		t.Errorf("%s: %q, want it to contain %q", side, err, msg)
	}
}

func TestServerTLSRejectsOldTLS(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	mgr := liveNode(t, c, "mgr1", RoleManager)
	cfg := ClientTLS(c.Pool(), mgr.id, "")
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	r := handshake(t, ServerTLS(c.Pool(), mgr.id, Policy{}), cfg)
	if r.server == nil || r.client == nil {
		t.Errorf("TLS 1.2 accepted: server %v, client %v", r.server, r.client)
	}
}

func TestRenewedCertificateUsedAtNextHandshake(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	mgr := liveNode(t, c, "mgr1", RoleManager)
	wrk := liveNode(t, c, "wrk1", RoleWorker)
	srvCfg, cliCfg := ServerTLS(c.Pool(), mgr.id, Policy{}), ClientTLS(c.Pool(), wrk.id, "")

	renewed := liveNode(t, c, "wrk1", RoleWorker)
	if err := wrk.id.Set(*renewed.id.Certificate()); err != nil {
		t.Fatal(err)
	}
	r := handshake(t, srvCfg, cliCfg)
	if r.server != nil || r.client != nil {
		t.Fatalf("server %v, client %v", r.server, r.client)
	}
	got, _ := PeerIdentity(r.serverState)
	if got.Serial != renewed.id.Node().Serial {
		t.Errorf("server saw serial %s, want the renewed %s", got.Serial, renewed.id.Node().Serial)
	}
}

func TestPinned(t *testing.T) {
	c := newTestCA(t, "cluster1", testNow)
	other := newTestCA(t, "cluster2", testNow)
	mgr := liveNode(t, c, "mgr1", RoleManager)
	wrk := liveNode(t, c, "wrk1", RoleWorker)
	expiredMgr := issueNode(t, c, "mgr9", RoleManager, time.Now().Add(-48*time.Hour), time.Hour)
	// A manager whose chain lacks the CA certificate.
	bare := *mgr.id.Certificate()
	bare.Certificate = bare.Certificate[:1]
	bareID, err := NewIdentity(bare)
	if err != nil {
		t.Fatal(err)
	}
	join := Policy{AllowAnonymous: true}

	tests := []struct {
		name      string
		server    *Identity
		digest    string
		clientErr error
		clientMsg string
	}{
		{name: "right digest", server: mgr.id, digest: c.Digest()},
		{name: "wrong digest", server: mgr.id, digest: other.Digest(), clientErr: ErrWrongCA,
			clientMsg: "the manager's CA certificate does not match the join token's digest"},
		{name: "no CA in the chain", server: bareID, digest: c.Digest(), clientErr: ErrWrongCA,
			clientMsg: "does not match the join token's digest"},
		{name: "worker answering", server: wrk.id, digest: c.Digest(), clientErr: ErrBadCertificate,
			clientMsg: "node wrk1 is not a manager"},
		{name: "expired manager", server: expiredMgr.id, digest: c.Digest(), clientErr: ErrExpired,
			clientMsg: "certificate of node mgr9 expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, ServerTLS(c.Pool(), tt.server, join), ClientTLSPinned(tt.digest))
			checkErr(t, "client", r.client, tt.clientErr, tt.clientMsg)
			if tt.clientErr == nil {
				if r.server != nil {
					t.Errorf("server: %v", r.server)
				}
				if _, ok := PeerIdentity(r.serverState); ok {
					t.Error("server found an identity for a joiner")
				}
				return
			}
			if r.server == nil {
				t.Error("server: handshake succeeded although the client refused it")
			}
		})
	}
}

func TestPinnedClock(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	mgr := liveNode(t, c, "mgr1", RoleManager)
	cfg := ClientTLSPinned(c.Digest())
	cfg.Time = func() time.Time { return time.Now().Add(2 * time.Hour) }
	r := handshake(t, ServerTLS(c.Pool(), mgr.id, Policy{AllowAnonymous: true}), cfg)
	checkErr(t, "client", r.client, ErrExpired, "certificate of node mgr1 expired at")
}

func TestExplain(t *testing.T) {
	plain := errors.New("dial tcp: connection refused")
	typed := &certError{kind: ErrRevoked, msg: "x"}
	tests := []struct {
		name string
		in   error
		want error
	}{
		{"nil", nil, nil},
		{"unrelated", plain, plain},
		{"EOF", io.EOF, io.EOF},
		{"already classified", typed, typed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Explain(tt.in); got != tt.want {
				t.Errorf("Explain(%v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
	// A remote alert wrapped by a caller, as gRPC does.
	wrapped := errors.New(`rpc error: code = Unavailable desc = connection error: desc = "remote error: tls: unknown certificate authority"`)
	if got := Explain(wrapped); !errors.Is(got, ErrWrongCA) {
		t.Errorf("Explain(%v) = %v, want ErrWrongCA", wrapped, got)
	}
}

func TestPeerIdentityNeedsVerifiedChain(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	n := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)
	// What a peer sent but no verification accepted, as after
	// InsecureSkipVerify.
	unverified := tls.ConnectionState{PeerCertificates: []*x509.Certificate{n.leaf}}
	if got, ok := PeerIdentity(unverified); ok {
		t.Errorf("PeerIdentity of an unverified certificate = %+v", got)
	}
	verified := unverified
	verified.VerifiedChains = [][]*x509.Certificate{{n.leaf, c.Cert}}
	if got, ok := PeerIdentity(verified); !ok || got.NodeID != "node1" {
		t.Errorf("PeerIdentity = %+v, %v", got, ok)
	}
}
