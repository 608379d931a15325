// Package ca is the swarm's certificate authority: the root CA made at
// `swarm init`, the node certificates it issues, the join tokens that name
// it, and the TLS configurations every node-to-node connection uses.
//
// The model is swarmkit's. The CA certificate and key live in the
// replicated store, so any manager can sign. Every node holds a certificate
// whose subject names it: CN is the node id, OU its role, O the cluster id.
// A peer's identity is read from its verified certificate (PeerIdentity),
// never from a field it sends. A joining node has no certificate yet: it
// dials a manager with ClientTLSPinned, which trusts the manager only if
// its chain ends in the CA whose digest the join token carries, and sends
// a certificate signing request; the manager decides the node id and role
// and signs (SignCSR), whatever subject the request asked for.
//
// The package opens no sockets and keeps no state beyond the certificate a
// node currently holds (Identity): revocation, token rotation and renewal
// are decisions its callers make with the store, through Revoked,
// MatchToken and NeedsRenewal.
package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Node roles, as written in a certificate's OU.
const (
	RoleManager = "manager"
	RoleWorker  = "worker"
)

const (
	// RootCommonName is the CN of every swarm's root CA certificate.
	RootCommonName = "shoal-root-ca"
	// ManagerName is a DNS name every manager certificate carries besides
	// its node id, so a node can dial any manager and verify it as a
	// manager without knowing which one answers.
	ManagerName = "shoal-manager"
	// CAValidity is how long a root CA certificate is valid, as in swarmkit.
	CAValidity = 20 * 365 * 24 * time.Hour
	// DefaultValidity is how long a node certificate is valid, as in
	// swarmkit; nodes renew from halfway (NeedsRenewal).
	DefaultValidity = 90 * 24 * time.Hour
	// Backdate is how far before its issue a certificate becomes valid, so
	// a peer whose clock is a little behind the CA's accepts it at once.
	Backdate = time.Hour
)

// digestLen is the length of a CA digest: a SHA-256 in base 36 needs at
// most 50 digits (36^50 > 2^256), and is zero-padded to exactly 50.
const digestLen = 50

// CA is a swarm's root certificate authority. Cert, CertPEM and KeyPEM are
// what the store keeps; the key is unencrypted there, as in swarmkit
// without autolock.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte

	key  crypto.Signer
	pool *x509.CertPool
}

// New makes the root CA of a new swarm: an ECDSA P-256 key and a
// self-signed certificate with CN RootCommonName and O clusterID, valid
// for CAValidity from now (less Backdate).
func New(clusterID string, now time.Time) (*CA, error) {
	if clusterID == "" {
		return nil, errors.New("new CA: empty cluster id")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RootCommonName, Organization: []string{clusterID}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Node certificates hang directly off the root.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA: create certificate: %w", err)
	}
	keyPEM, err := MarshalKey(key)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return Load(pemBlock("CERTIFICATE", der), keyPEM)
}

// Load reads a CA from the PEM certificate and key the store keeps. The
// key may be PKCS #8 ("PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"); it must
// match the certificate.
func Load(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA: certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	if len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] == "" {
		return nil, errors.New("load CA: certificate names no cluster id (subject O)")
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("load CA: the key does not match the CA certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		Cert:    cert,
		CertPEM: pemBlock("CERTIFICATE", cert.Raw),
		KeyPEM:  bytes.Clone(keyPEM),
		key:     key,
		pool:    pool,
	}, nil
}

// ClusterID returns the id of the swarm this CA belongs to (its subject O).
func (c *CA) ClusterID() string { return c.Cert.Subject.Organization[0] }

// Digest returns the CA's digest as join tokens carry it: the SHA-256 of
// the DER certificate, read as a big-endian number and written in base 36
// (0-9a-z), zero-padded to 50 characters. Swarmkit writes the same form,
// though it hashes the PEM; the DER does not change with line endings.
func (c *CA) Digest() string { return digestDER(c.Cert.Raw) }

// Pool returns a pool holding only this CA, for ServerTLS and ClientTLS.
func (c *CA) Pool() *x509.CertPool { return c.pool }

func digestDER(der []byte) string {
	sum := sha256.Sum256(der)
	s := new(big.Int).SetBytes(sum[:]).Text(36)
	return strings.Repeat("0", digestLen-len(s)) + s
}

// Issue signs a certificate for the node nodeID with the given role and
// public key, valid from now (less Backdate) for validity, but never past
// the CA's own expiry. The certificate's CN is nodeID, OU role and O the
// cluster id; its DNS names are nodeID and, for managers, ManagerName; it
// serves for both client and server authentication; its serial is 128
// random bits. It returns the certificate in PEM.
func (c *CA) Issue(pub crypto.PublicKey, nodeID, role string, now time.Time, validity time.Duration) ([]byte, error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	if role != RoleManager && role != RoleWorker {
		return nil, fmt.Errorf("issue certificate for node %s: unknown role %q (want %q or %q)", nodeID, role, RoleManager, RoleWorker)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("issue certificate for node %s: validity %v is not positive", nodeID, validity)
	}
	if !now.Before(c.Cert.NotAfter) {
		return nil, fmt.Errorf("issue certificate for node %s: the swarm's CA certificate expired at %s", nodeID, stamp(c.Cert.NotAfter))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for node %s: %w", nodeID, err)
	}
	notBefore := now.Add(-Backdate)
	if notBefore.Before(c.Cert.NotBefore) {
		notBefore = c.Cert.NotBefore
	}
	notAfter := now.Add(validity)
	if notAfter.After(c.Cert.NotAfter) {
		notAfter = c.Cert.NotAfter
	}
	dns := []string{nodeID}
	if role == RoleManager {
		dns = append(dns, ManagerName)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         nodeID,
			OrganizationalUnit: []string{role},
			Organization:       []string{c.ClusterID()},
		},
		DNSNames:              dns,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for node %s: %w", nodeID, err)
	}
	return pemBlock("CERTIFICATE", der), nil
}

// SignCSR checks the signature of a PKCS #10 certificate request and
// issues a certificate for its public key (see Issue). The subject and
// names the request asks for are ignored: nodeID and role are the
// manager's decision, from the join token or the store.
func (c *CA) SignCSR(csrDER []byte, nodeID, role string, now time.Time, validity time.Duration) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("sign certificate request for node %s: %w", nodeID, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign certificate request for node %s: the request's signature is not valid: %w", nodeID, err)
	}
	return c.Issue(csr.PublicKey, nodeID, role, now, validity)
}

// NewKey makes a node's ECDSA P-256 key and a certificate request for it,
// with an empty subject since the manager decides the names. The node
// keeps the key (MarshalKey) and sends the request's DER.
func NewKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate node key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	return key, csr, nil
}

// MarshalKey returns key as a PKCS #8 PEM block ("PRIVATE KEY").
func MarshalKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

// ParseCertPEM returns the first certificate in PEM data.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block found")
		}
		if b.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return cert, nil
		}
	}
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key block found")
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse private key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("private key of type %T cannot sign", k)
			}
			return s, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse private key: %w", err)
			}
			return k, nil
		}
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// randomSerial returns a positive serial number of 128 random bits.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// checkNodeID accepts what identity.NewID makes and anything else that is
// a DNS label, since node ids are also DNS names in certificates.
func checkNodeID(id string) error {
	if id == "" || len(id) > 63 {
		return fmt.Errorf("node id %q must be 1 to 63 characters", id)
	}
	for i, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		case r == '-' && i > 0 && i < len(id)-1:
		default:
			return fmt.Errorf("node id %q may hold only a-z, 0-9 and inner '-'", id)
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
