package ca

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// Revoked reports whether a peer's certificate must be refused although
// the CA signed it and it has not expired. The manager answers from the
// store: true for a node that `node rm` removed (by NodeID, so every
// certificate it ever held is refused), for a revoked serial, or for a
// role the node no longer has (a demoted manager's old certificate).
// It runs at every handshake and must be quick.
type Revoked func(NodeCert) bool

// Policy says whom a server accepts besides "a certificate of this CA".
type Policy struct {
	// Revoked, if set, refuses certificates at the handshake with an
	// error wrapping ErrRevoked. Connections already open are not
	// affected: the dispatcher ends the sessions of a removed node.
	Revoked Revoked
	// AllowAnonymous accepts clients with no certificate. The dispatcher
	// port needs it for the join RPC, as a joining node has no
	// certificate yet; every other RPC must then require an identity with
	// PeerIdentity. A client that does send a certificate is verified as
	// always.
	AllowAnonymous bool
	// Roles, if not empty, are the roles that may connect: the Raft port
	// accepts RoleManager only.
	Roles []string
}

// ServerTLS returns the configuration of a listener between nodes: TLS
// 1.3, the certificate id holds now (with the CA in its chain), and client
// certificates verified against roots, then checked against p.
//
// crypto/tls verifies the chain and expiry, so a refused client learns why
// from the TLS alert (expired certificate, unknown certificate authority;
// Explain reads those); the checks of p follow and end in a "bad
// certificate" alert. The server's own Handshake error goes through
// Explain too. Session tickets are off, so every connection is verified
// in full and a revocation cannot be skipped by resuming a session.
//
// gRPC: credentials.NewTLS(ServerTLS(...)); hashicorp/raft:
// tls.NewListener(ln, ServerTLS(...)).
func ServerTLS(roots *x509.CertPool, id *Identity, p Policy) *tls.Config {
	auth := tls.RequireAndVerifyClientCert
	if p.AllowAnonymous {
		auth = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.Certificate(), nil
		},
		ClientCAs:              roots,
		ClientAuth:             auth,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if p.AllowAnonymous {
					return nil
				}
				return &certError{kind: ErrBadCertificate, msg: "the client sent no certificate"}
			}
			return p.check(cs.PeerCertificates[0])
		},
	}
}

// check applies the policy to a verified peer certificate.
func (p Policy) check(cert *x509.Certificate) error {
	n, err := Identify(cert)
	if err != nil {
		return err
	}
	if len(p.Roles) > 0 && !slices.Contains(p.Roles, n.Role) {
		return &certError{kind: ErrBadCertificate,
			msg: fmt.Sprintf("node %s is a %s; only %v may connect here", n.NodeID, n.Role, p.Roles)}
	}
	if p.Revoked != nil && p.Revoked(n) {
		return &certError{kind: ErrRevoked,
			msg: fmt.Sprintf("certificate of node %s (serial %s) has been revoked (node removed from the swarm)", n.NodeID, n.Serial)}
	}
	return nil
}

// ClientTLS returns the configuration of a node dialing another: TLS 1.3,
// the server verified against roots and serverName, and id's certificate
// offered to the server. serverName is ManagerName (the default when
// empty) to reach any manager, or a node id to reach that node. id may be
// nil to dial without a certificate, which a server accepts only with
// Policy.AllowAnonymous.
//
// Under TLS 1.3 a client's Handshake returns before the server has judged
// its certificate: a refusal shows on the first read, and Explain makes
// it readable.
func ClientTLS(roots *x509.CertPool, id *Identity, serverName string) *tls.Config {
	if serverName == "" {
		serverName = ManagerName
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if id == nil {
				return &tls.Certificate{}, nil
			}
			return id.Certificate(), nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &certError{kind: ErrBadCertificate, msg: "the server sent no certificate"}
			}
			n, err := Identify(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if serverName == ManagerName && n.Role != RoleManager {
				return &certError{kind: ErrBadCertificate,
					msg: fmt.Sprintf("node %s is a %s, not a manager", n.NodeID, n.Role)}
			}
			return nil
		},
	}
}

// ClientTLSPinned returns the configuration of a joining node dialing a
// manager. The node has no certificate and does not know the CA yet, only
// the digest its join token carries: it accepts the manager if the chain
// the manager sends holds the CA certificate with that digest, and the
// manager's certificate is valid, names ManagerName and was signed by
// that CA. Otherwise the handshake fails with an error wrapping
// ErrWrongCA (digest), ErrExpired or ErrBadCertificate.
func ClientTLSPinned(digest string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: ManagerName,
		// The chain is verified below, against the pinned CA.
		InsecureSkipVerify: true,
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		now := time.Now()
		if cfg.Time != nil {
			now = cfg.Time()
		}
		return verifyPinned(cs.PeerCertificates, digest, now)
	}
	return cfg
}

func verifyPinned(certs []*x509.Certificate, digest string, now time.Time) error {
	if len(certs) == 0 {
		return &certError{kind: ErrBadCertificate, msg: "the manager sent no certificate"}
	}
	var root *x509.Certificate
	for _, c := range certs[1:] {
		if digestDER(c.Raw) == digest {
			root = c
			break
		}
	}
	if root == nil {
		var last *x509.Certificate
		if len(certs) > 1 {
			last = certs[len(certs)-1]
		}
		return errWrongPin(last)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		DNSName:     ManagerName,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return classifyVerify(err, certs[0])
	}
	n, err := Identify(certs[0])
	if err != nil {
		return err
	}
	if n.Role != RoleManager {
		return &certError{kind: ErrBadCertificate, msg: fmt.Sprintf("node %s is a %s, not a manager", n.NodeID, n.Role)}
	}
	return nil
}

// PeerIdentity returns the identity of the peer of a connection whose
// handshake verified the peer's certificate (ServerTLS, ClientTLS), and
// false if the peer sent none (an anonymous joiner). RPC handlers take the
// node id and role from here, never from the request. With gRPC:
//
//	p, _ := peer.FromContext(ctx)
//	info, _ := p.AuthInfo.(credentials.TLSInfo)
//	node, ok := ca.PeerIdentity(info.State)
func PeerIdentity(cs tls.ConnectionState) (NodeCert, bool) {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return NodeCert{}, false
	}
	n, err := Identify(cs.PeerCertificates[0])
	if err != nil {
		return NodeCert{}, false
	}
	return n, true
}
