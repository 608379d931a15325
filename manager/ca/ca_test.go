package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNew(t *testing.T) {
	c := newTestCA(t, "cluster1", testNow)
	cert := c.Cert
	if cert.Subject.CommonName != RootCommonName || !slices.Equal(cert.Subject.Organization, []string{"cluster1"}) {
		t.Errorf("subject = %v", cert.Subject)
	}
	if c.ClusterID() != "cluster1" {
		t.Errorf("ClusterID = %q", c.ClusterID())
	}
	if !cert.IsCA || !cert.MaxPathLenZero || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA: IsCA %v MaxPathLenZero %v usage %v", cert.IsCA, cert.MaxPathLenZero, cert.KeyUsage)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", cert.PublicKey)
	}
	if !cert.NotBefore.Equal(testNow.Add(-Backdate)) || !cert.NotAfter.Equal(testNow.Add(CAValidity)) {
		t.Errorf("validity %v .. %v", cert.NotBefore, cert.NotAfter)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	d := c.Digest()
	if len(d) != 50 || !isBase36(d) {
		t.Errorf("digest %q: want 50 base-36 characters", d)
	}
	if d == newTestCA(t, "cluster1", testNow).Digest() {
		t.Error("two CAs have the same digest")
	}

	loaded, err := Load(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Digest() != d {
		t.Error("Load changed the digest")
	}
	// Keys written by other tools may be SEC 1.
	sec1, err := x509.MarshalECPrivateKey(c.key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(c.CertPEM, pemBlock("EC PRIVATE KEY", sec1)); err != nil {
		t.Errorf("Load with a SEC 1 key: %v", err)
	}
	// A loaded CA signs what the original verifies.
	n := issueNode(t, loaded, "node1", RoleWorker, testNow, time.Hour)
	if _, err := n.leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate of loaded CA does not verify: %v", err)
	}
}

func TestNewEmptyCluster(t *testing.T) {
	if _, err := New("", testNow); err == nil {
		t.Error("New with no cluster id succeeded")
	}
}

func TestLoadErrors(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	other := newTestCA(t, "c", testNow)
	n := issueNode(t, c, "node1", RoleManager, testNow, time.Hour)
	tests := []struct {
		name            string
		certPEM, keyPEM []byte
		want            string
	}{
		{"garbage cert", []byte("junk"), c.KeyPEM, "no PEM CERTIFICATE"},
		{"garbage key", c.CertPEM, []byte("junk"), "no PEM private key"},
		{"key of another CA", c.CertPEM, other.KeyPEM, "does not match"},
		{"node certificate", n.certPEM, n.keyPEM, "is not a CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.certPEM, tt.keyPEM)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestIssueAndIdentify(t *testing.T) {
	c := newTestCA(t, "cluster1", testNow)
	tests := []struct {
		role string
		dns  []string
	}{
		{RoleManager, []string{"node1", ManagerName}},
		{RoleWorker, []string{"node1"}},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			pemBytes, err := c.Issue(key.Public(), "node1", tt.role, testNow, DefaultValidity)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ParseCertPEM(pemBytes)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cert.DNSNames, tt.dns) {
				t.Errorf("DNS names %v, want %v", cert.DNSNames, tt.dns)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ext key usage %v", cert.ExtKeyUsage)
			}
			if cert.IsCA || !cert.BasicConstraintsValid {
				t.Error("leaf is a CA")
			}
			if !cert.NotBefore.Equal(testNow.Add(-Backdate)) || !cert.NotAfter.Equal(testNow.Add(DefaultValidity)) {
				t.Errorf("validity %v .. %v", cert.NotBefore, cert.NotAfter)
			}
			if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v: want positive, at most 128 bits", cert.SerialNumber)
			}
			opts := x509.VerifyOptions{Roots: c.Pool(), CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if _, err := cert.Verify(opts); err != nil {
				t.Errorf("verify: %v", err)
			}
			got, err := Identify(cert)
			if err != nil {
				t.Fatal(err)
			}
			want := NodeCert{NodeID: "node1", Role: tt.role, ClusterID: "cluster1", NotAfter: testNow.Add(DefaultValidity), Serial: cert.SerialNumber.Text(16)}
			if got != want {
				t.Errorf("Identify = %+v, want %+v", got, want)
			}
		})
	}
}

func TestIssueSerialsDiffer(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	a := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)
	b := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)
	if a.leaf.SerialNumber.Cmp(b.leaf.SerialNumber) == 0 {
		t.Error("two certificates have the same serial")
	}
}

func TestIssueErrors(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		nodeID   string
		role     string
		now      time.Time
		validity time.Duration
		want     string
	}{
		{"empty node id", "", RoleWorker, testNow, time.Hour, "1 to 63 characters"},
		{"node id with a dot", "a.b", RoleWorker, testNow, time.Hour, "may hold only"},
		{"upper case node id", "Node1", RoleWorker, testNow, time.Hour, "may hold only"},
		{"unknown role", "node1", "admin", testNow, time.Hour, `unknown role "admin"`},
		{"no validity", "node1", RoleWorker, testNow, 0, "not positive"},
		{"CA expired", "node1", RoleWorker, testNow.Add(CAValidity + time.Second), time.Hour, "CA certificate expired at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Issue(key.Public(), tt.nodeID, tt.role, tt.now, tt.validity)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Issue: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestIssueStaysWithinCA(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	// Issued just after the CA was made, and near its end.
	early := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)
	if early.leaf.NotBefore.Before(c.Cert.NotBefore) {
		t.Errorf("NotBefore %v precedes the CA's %v", early.leaf.NotBefore, c.Cert.NotBefore)
	}
	late := issueNode(t, c, "node1", RoleWorker, c.Cert.NotAfter.Add(-time.Hour), DefaultValidity)
	if !late.leaf.NotAfter.Equal(c.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want capped at the CA's %v", late.leaf.NotAfter, c.Cert.NotAfter)
	}
}

func TestSignCSRIgnoresSubject(t *testing.T) {
	c := newTestCA(t, "cluster1", testNow)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The joiner asks to be a manager called "boss" of another cluster.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "boss", OrganizationalUnit: []string{RoleManager}, Organization: []string{"evil"}},
		DNSNames: []string{ManagerName, "boss"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := c.SignCSR(csr, "node7", RoleWorker, testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Identify(cert)
	if err != nil {
		t.Fatal(err)
	}
	if n.NodeID != "node7" || n.Role != RoleWorker || n.ClusterID != "cluster1" {
		t.Errorf("identity %+v: want the manager's node7, worker, cluster1", n)
	}
	if !slices.Equal(cert.DNSNames, []string{"node7"}) {
		t.Errorf("DNS names %v, want only node7", cert.DNSNames)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("certificate is not for the request's key")
	}
}

func TestSignCSRBadRequest(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	_, csr, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	forged := slices.Clone(csr)
	forged[len(forged)-3] ^= 0xff // inside the signature
	tests := []struct {
		name string
		der  []byte
		want string
	}{
		{"garbage", []byte("junk"), "sign certificate request for node node1"},
		{"bad signature", forged, "signature is not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SignCSR(tt.der, "node1", RoleWorker, testNow, time.Hour)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("SignCSR: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestIdentifyRejects(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	mk := func(subject pkix.Name) *x509.Certificate {
		serial, _ := randomSerial()
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: serial, Subject: subject, NotBefore: testNow, NotAfter: testNow.Add(time.Hour),
		}, c.Cert, key.Public(), c.key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"nil", nil, "no certificate"},
		{"CA", c.Cert, "is a CA certificate"},
		{"no node id", mk(pkix.Name{OrganizationalUnit: []string{RoleWorker}, Organization: []string{"c"}}), "1 to 63"},
		{"no role", mk(pkix.Name{CommonName: "n1", Organization: []string{"c"}}), "names no role"},
		{"unknown role", mk(pkix.Name{CommonName: "n1", OrganizationalUnit: []string{"admin"}, Organization: []string{"c"}}), "names no role"},
		{"two roles", mk(pkix.Name{CommonName: "n1", OrganizationalUnit: []string{RoleWorker, RoleManager}, Organization: []string{"c"}}), "names no role"},
		{"no cluster", mk(pkix.Name{CommonName: "n1", OrganizationalUnit: []string{RoleWorker}}), "no cluster id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Identify(tt.cert)
			if !errors.Is(err, ErrBadCertificate) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Identify: %v, want ErrBadCertificate containing %q", err, tt.want)
			}
		})
	}
}

func TestX509KeyPair(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	other := newTestCA(t, "other", testNow)
	n := issueNode(t, c, "node1", RoleManager, testNow, time.Hour)
	cert, err := X509KeyPair(n.certPEM, n.keyPEM, c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 2 || string(cert.Certificate[1]) != string(c.Cert.Raw) {
		t.Error("chain does not end with the CA certificate")
	}
	_, err = X509KeyPair(n.certPEM, n.keyPEM, other.CertPEM)
	if !errors.Is(err, ErrWrongCA) || !strings.Contains(err.Error(), "certificate of node node1 was not issued by the CA of cluster other") {
		t.Errorf("with another CA: %v", err)
	}
	m := issueNode(t, c, "node2", RoleManager, testNow, time.Hour)
	if _, err := X509KeyPair(n.certPEM, m.keyPEM, c.CertPEM); err == nil {
		t.Error("certificate with another node's key accepted")
	}
}

func TestIdentitySet(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	n := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)
	promoted := issueNode(t, c, "node1", RoleManager, testNow, time.Hour)
	if err := n.id.Set(*promoted.id.Certificate()); err != nil {
		t.Fatal(err)
	}
	if got := n.id.Node(); got.Role != RoleManager || got.Serial != promoted.id.Node().Serial {
		t.Errorf("after Set: %+v", got)
	}
	stranger := issueNode(t, c, "node2", RoleWorker, testNow, time.Hour)
	if err := n.id.Set(*stranger.id.Certificate()); err == nil || !strings.Contains(err.Error(), "for node node2") {
		t.Errorf("Set with another node's certificate: %v", err)
	}
	if _, err := NewIdentity(*newCAAsTLS(t, c)); !errors.Is(err, ErrBadCertificate) {
		t.Errorf("NewIdentity with the CA's own certificate: %v", err)
	}
}

// newCAAsTLS returns the CA certificate and key as a tls.Certificate, which
// is not a node identity.
func newCAAsTLS(t *testing.T, c *CA) *tls.Certificate {
	cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}
