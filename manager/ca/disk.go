package ca

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// NodeFile is the file, in the directory SaveNode and LoadNode use, that
// holds a node's certificate, the CA certificate and the node's key, in
// that order, as PEM. One file rather than three, so that a crash during
// a renewal, which changes both the certificate and the key, cannot leave
// a certificate beside the wrong key: the file is replaced whole, by
// rename.
const NodeFile = "node.pem"

// SaveNode writes a node's certificate, key and CA certificate (all PEM)
// to dir/NodeFile with mode 0600, creating dir with mode 0700 if needed.
// It checks first that they belong together (X509KeyPair), then writes a
// temporary file, syncs it and renames it over the old one, so a reader
// sees either the old identity or the new one.
func SaveNode(dir string, certPEM, keyPEM, caPEM []byte) error {
	if _, err := X509KeyPair(certPEM, keyPEM, caPEM); err != nil {
		return fmt.Errorf("save node certificate: %w", err)
	}
	leaf, _ := firstBlock(certPEM, "CERTIFICATE")
	root, _ := firstBlock(caPEM, "CERTIFICATE")
	key, ok := firstBlock(keyPEM, "PRIVATE KEY", "EC PRIVATE KEY")
	if leaf == nil || root == nil || !ok {
		return fmt.Errorf("save node certificate: missing PEM block")
	}
	var buf bytes.Buffer
	for _, b := range []*pem.Block{leaf, root, key} {
		if err := pem.Encode(&buf, b); err != nil {
			return fmt.Errorf("save node certificate: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save node certificate: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, NodeFile), buf.Bytes()); err != nil {
		return fmt.Errorf("save node certificate: %w", err)
	}
	return nil
}

// LoadNode reads what SaveNode wrote: the node's TLS certificate (with the
// CA in its chain, for NewIdentity), a pool holding the CA (for ServerTLS
// and ClientTLS) and the parsed node certificate (for NeedsRenewal and
// Identify). It does not check expiry; the caller decides what an expired
// certificate means. A node that never joined gets an error for which
// errors.Is(err, fs.ErrNotExist) holds.
func LoadNode(dir string) (tls.Certificate, *x509.CertPool, *x509.Certificate, error) {
	path := filepath.Join(dir, NodeFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("load node certificate: %w", err)
	}
	var certs, keys [][]byte
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			certs = append(certs, pem.EncodeToMemory(b))
		case "PRIVATE KEY", "EC PRIVATE KEY":
			keys = append(keys, pem.EncodeToMemory(b))
		}
	}
	if len(certs) != 2 || len(keys) != 1 {
		return tls.Certificate{}, nil, nil, fmt.Errorf("load node certificate: %s holds %d certificates and %d keys, want 2 and 1", path, len(certs), len(keys))
	}
	cert, err := X509KeyPair(certs[0], keys[0], certs[1])
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("load node certificate from %s: %w", path, err)
	}
	root, err := ParseCertPEM(certs[1])
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("load node certificate from %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return cert, pool, cert.Leaf, nil
}

func firstBlock(data []byte, types ...string) (*pem.Block, bool) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, false
		}
		for _, t := range types {
			if b.Type == t {
				return b, true
			}
		}
	}
}

// writeAtomic replaces path with data, mode 0600, by a synced temporary
// file renamed over it, then syncs the directory so the rename survives a
// crash.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly once renamed
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
