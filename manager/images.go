package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/registry"
	"github.com/shoal-dev/shoal/runtime/image"
)

// registryPort is where a manager serves its images (the OCI
// distribution API, read-only, mutual TLS): the dispatcher's port + 2,
// 2379 by default.
func registryAddr(apiAddr string) (string, error) {
	host, port, err := net.SplitHostPort(apiAddr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(p+2)), nil
}

// serveRegistry serves this manager's image store to the swarm's nodes
// until ctx ends.
func (m *Manager) serveRegistry(ctx context.Context) error {
	addr, err := registryAddr(m.cfg.ListenAddr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("registry listen %s: %w", addr, err)
	}
	tlsCfg := ca.ServerTLS(m.pool, m.ident, ca.Policy{Revoked: m.revoked})
	return registry.Serve(ctx, ln, registry.New(m.rt.Images(), m.cfg.Logger), tlsCfg, m.cfg.Logger)
}

// pullImage fetches an image this node lacks. A reference that names a
// registry (host:port/repo:tag) is pulled from there; any other from the
// managers' registries in turn, with this node's certificate, so the
// swarm needs no registry of its own: `shoal image load` on a manager is
// enough for every node.
func (m *Manager) pullImage(ctx context.Context, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if first, _, ok := strings.Cut(ref, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		_, err := m.rt.Images().Pull(ctx, ref, image.PullOptions{})
		return err
	}
	transport := &http.Transport{TLSClientConfig: ca.ClientTLS(m.pool, m.ident, ca.ManagerName), ForceAttemptHTTP2: true}
	defer transport.CloseIdleConnections()
	var errs []error
	for _, api := range m.managerAddrs(m.store) {
		if api == m.cfg.AdvertiseAddr {
			continue
		}
		reg, err := registryAddr(api)
		if err != nil {
			continue
		}
		if _, err := m.rt.Images().Pull(ctx, ref, image.PullOptions{Registry: reg, Transport: transport}); err != nil {
			errs = append(errs, err)
			continue
		}
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no other manager to pull from")
	}
	return errors.Join(errs...)
}
