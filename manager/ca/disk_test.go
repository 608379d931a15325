package ca

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSaveLoadNode(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	n := issueNode(t, c, "node1", RoleManager, testNow, time.Hour)
	dir := filepath.Join(t.TempDir(), "certificates")

	if err := SaveNode(dir, n.certPEM, n.keyPEM, c.CertPEM); err != nil {
		t.Fatal(err)
	}
	cert, pool, leaf, err := LoadNode(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Equal(n.leaf) {
		t.Error("loaded another certificate")
	}
	if len(cert.Certificate) != 2 || string(cert.Certificate[1]) != string(c.Cert.Raw) {
		t.Error("loaded chain does not end with the CA")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: testNow}); err != nil {
		t.Errorf("loaded pool does not verify the certificate: %v", err)
	}
	id, err := NewIdentity(cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.Node().NodeID != "node1" {
		t.Errorf("identity %+v", id.Node())
	}

	checkMode(t, dir, 0o700)
	checkMode(t, filepath.Join(dir, NodeFile), 0o600)

	// A renewal replaces the file and leaves no temporary behind.
	renewed := issueNode(t, c, "node1", RoleManager, testNow, 2*time.Hour)
	if err := SaveNode(dir, renewed.certPEM, renewed.keyPEM, c.CertPEM); err != nil {
		t.Fatal(err)
	}
	if _, _, leaf, err = LoadNode(dir); err != nil || !leaf.Equal(renewed.leaf) {
		t.Errorf("after renewal: %v, same certificate %v", err, leaf != nil && leaf.Equal(renewed.leaf))
	}
	checkMode(t, filepath.Join(dir, NodeFile), 0o600)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only %s", len(entries), NodeFile)
	}
}

func TestSaveNodeRefusesMismatch(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	other := newTestCA(t, "c2", testNow)
	n := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)
	m := issueNode(t, c, "node2", RoleWorker, testNow, time.Hour)
	dir := t.TempDir()
	if err := SaveNode(dir, n.certPEM, n.keyPEM, c.CertPEM); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                   string
		certPEM, keyPEM, caPEM []byte
		want                   string
	}{
		{"another node's key", n.certPEM, m.keyPEM, c.CertPEM, "private key does not match"},
		{"another CA", n.certPEM, n.keyPEM, other.CertPEM, "not issued by the CA of cluster c2"},
		{"no CA", n.certPEM, n.keyPEM, nil, "CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := SaveNode(dir, tt.certPEM, tt.keyPEM, tt.caPEM)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("SaveNode: %v, want an error containing %q", err, tt.want)
			}
			// The identity saved before is intact.
			if _, _, leaf, err := LoadNode(dir); err != nil || !leaf.Equal(n.leaf) {
				t.Errorf("after a refused save: %v", err)
			}
		})
	}
}

func TestLoadNodeErrors(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	n := issueNode(t, c, "node1", RoleWorker, testNow, time.Hour)

	_, _, _, err := LoadNode(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no file: %v, want fs.ErrNotExist", err)
	}

	tests := []struct {
		name    string
		content []byte
		want    string
	}{
		{"empty", nil, "holds 0 certificates and 0 keys"},
		{"no key", append(append([]byte{}, n.certPEM...), c.CertPEM...), "holds 2 certificates and 0 keys"},
		{"no CA", append(append([]byte{}, n.certPEM...), n.keyPEM...), "holds 1 certificates and 1 keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, NodeFile), tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, _, err := LoadNode(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadNode: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}
