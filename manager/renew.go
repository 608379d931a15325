package manager

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/manager/store"
	clusterv1 "github.com/shoal-dev/shoal/proto/cluster/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// renewLoop renews this node's certificate from half its validity on, as
// long as the node runs: a manager signs its own with the swarm's CA, a
// worker asks a manager. A failed renewal is tried again soon, well
// before the certificate expires.
func (m *Manager) renewLoop(ctx context.Context) {
	for {
		leaf, err := x509.ParseCertificate(m.ident.Certificate().Certificate[0])
		if err != nil {
			m.log.Error("node certificate", "err", err)
			return
		}
		wait := time.Until(ca.RenewAt(leaf))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		if err := m.renew(ctx); err != nil {
			retry := min(time.Minute, max(leaf.NotAfter.Sub(leaf.NotBefore)/20, time.Second))
			m.log.Warn("certificate renewal failed; trying again", "err", err, "after", retry)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			continue
		}
	}
}

// renew gets and installs a new certificate for this node, with the role
// the store has for it.
func (m *Manager) renew(ctx context.Context) error {
	key, csr, err := ca.NewKey()
	if err != nil {
		return err
	}
	var certPEM []byte
	if m.raft != nil {
		root, cl, err := m.signer()
		if err != nil {
			return err
		}
		role := ca.RoleManager
		var n *typesv1.Node
		m.store.View(func(tx store.ReadTx) { n = store.GetNode(tx, m.state.NodeID) })
		if n != nil {
			// Outside the view: roleOf asks Raft, whose applies need
			// the store.
			role = m.roleOf(n)
		}
		if certPEM, err = root.SignCSR(csr, m.state.NodeID, role, time.Now(), validity(cl)); err != nil {
			return err
		}
	} else {
		var errs []error
		for _, addr := range m.managerAddrs(m.store) {
			conn, err := m.peers.conn(addr)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := clusterv1.NewClusterClient(conn).RenewCertificate(cctx, &clusterv1.RenewCertificateRequest{Csr: csr})
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", addr, err))
				continue
			}
			certPEM = resp.GetCertPem()
			break
		}
		if certPEM == nil {
			return fmt.Errorf("no manager renewed the certificate: %w", errors.Join(errs...))
		}
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		return err
	}
	caCert, err := m.caCertPEM()
	if err != nil {
		return err
	}
	pair, err := ca.X509KeyPair(certPEM, keyPEM, caCert)
	if err != nil {
		return err
	}
	if err := m.ident.Set(pair); err != nil {
		return err
	}
	if err := ca.SaveNode(m.certDir(), certPEM, keyPEM, caCert); err != nil {
		return err
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	m.log.Info("node certificate renewed", "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
	return nil
}

// caCertPEM is the swarm's CA certificate as this node keeps it: the
// last of its certificate chain.
func (m *Manager) caCertPEM() ([]byte, error) {
	chain := m.ident.Certificate().Certificate
	if len(chain) < 2 {
		return nil, errors.New("node certificate chain without the CA")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[len(chain)-1]}), nil
}
