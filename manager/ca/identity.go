package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// NodeCert is the identity a node certificate carries.
type NodeCert struct {
	NodeID    string
	Role      string // RoleManager or RoleWorker
	ClusterID string
	NotAfter  time.Time
	// Serial is the certificate's serial number in lower-case hex.
	Serial string
}

// Identify reads the identity of a node certificate. It does not verify
// the certificate: use it on a peer certificate the TLS handshake has
// verified (PeerIdentity does), or on one's own.
func Identify(cert *x509.Certificate) (NodeCert, error) {
	if cert == nil {
		return NodeCert{}, &certError{kind: ErrBadCertificate, msg: "no certificate"}
	}
	bad := func(why string) (NodeCert, error) {
		return NodeCert{}, &certError{kind: ErrBadCertificate,
			msg: fmt.Sprintf("certificate %q is not a shoal node certificate: %s", cert.Subject.CommonName, why)}
	}
	if cert.IsCA {
		return bad("it is a CA certificate")
	}
	if err := checkNodeID(cert.Subject.CommonName); err != nil {
		return bad(err.Error())
	}
	ou := cert.Subject.OrganizationalUnit
	if len(ou) != 1 || (ou[0] != RoleManager && ou[0] != RoleWorker) {
		return bad(fmt.Sprintf("its OU %q names no role (want %q or %q)", ou, RoleManager, RoleWorker))
	}
	o := cert.Subject.Organization
	if len(o) != 1 || o[0] == "" {
		return bad("its O names no cluster id")
	}
	return NodeCert{
		NodeID:    cert.Subject.CommonName,
		Role:      ou[0],
		ClusterID: o[0],
		NotAfter:  cert.NotAfter,
		Serial:    cert.SerialNumber.Text(16),
	}, nil
}

// Identity holds the certificate a node presents. TLS configurations made
// by ServerTLS and ClientTLS read it at every handshake, so a renewed
// certificate (Set) takes effect on the next connection without
// rebuilding listeners or dialers. It is safe for concurrent use.
type Identity struct {
	cur atomic.Pointer[identityState]
}

type identityState struct {
	cert *tls.Certificate
	node NodeCert
}

// NewIdentity returns an Identity holding cert, which must be a node
// certificate; X509KeyPair and LoadNode make one.
func NewIdentity(cert tls.Certificate) (*Identity, error) {
	st, err := newIdentityState(cert)
	if err != nil {
		return nil, err
	}
	id := &Identity{}
	id.cur.Store(st)
	return id, nil
}

// Set replaces the certificate, after a renewal or a role change. The new
// one must name the same node and cluster.
func (i *Identity) Set(cert tls.Certificate) error {
	st, err := newIdentityState(cert)
	if err != nil {
		return err
	}
	old := i.cur.Load().node
	if st.node.NodeID != old.NodeID || st.node.ClusterID != old.ClusterID {
		return fmt.Errorf("replace certificate: the new one is for node %s of cluster %s, this node is %s of cluster %s",
			st.node.NodeID, st.node.ClusterID, old.NodeID, old.ClusterID)
	}
	i.cur.Store(st)
	return nil
}

// Certificate returns the current certificate, with its chain and key.
func (i *Identity) Certificate() *tls.Certificate { return i.cur.Load().cert }

// Node returns the identity the current certificate carries.
func (i *Identity) Node() NodeCert { return i.cur.Load().node }

func newIdentityState(cert tls.Certificate) (*identityState, error) {
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return nil, errors.New("node certificate: no certificate or no key")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	node, err := Identify(leaf)
	if err != nil {
		return nil, err
	}
	return &identityState{cert: &cert, node: node}, nil
}

// X509KeyPair is tls.X509KeyPair for a node: it also checks that the CA in
// caPEM issued the certificate, and appends the CA certificate to the
// chain. Managers must send the CA in their chain, since a joining node
// finds the CA it pins (ClientTLSPinned) there.
func X509KeyPair(certPEM, keyPEM, caPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node certificate and key: %w", err)
	}
	root, err := ParseCertPEM(caPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("CA certificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("node certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	if err := leaf.CheckSignatureFrom(root); err != nil {
		return tls.Certificate{}, &certError{kind: ErrWrongCA, cause: err,
			msg: fmt.Sprintf("certificate of %s was not issued by the CA of cluster %s", describe(leaf), clusterOf(root))}
	}
	cert.Certificate = append(cert.Certificate[:1:1], root.Raw)
	return cert, nil
}

func clusterOf(cert *x509.Certificate) string {
	if len(cert.Subject.Organization) > 0 {
		return cert.Subject.Organization[0]
	}
	return "(unknown)"
}

// describe names a certificate's holder for messages.
func describe(cert *x509.Certificate) string {
	if n, err := Identify(cert); err == nil {
		return "node " + n.NodeID
	}
	if cert.IsCA {
		return fmt.Sprintf("CA %q", cert.Subject.CommonName)
	}
	return fmt.Sprintf("%q", cert.Subject.CommonName)
}
