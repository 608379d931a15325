package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// shutdownGrace is how long Serve lets requests in flight finish once its
// context is done, before it cuts the connections.
const shutdownGrace = 5 * time.Second

// ErrInsecure is returned by Serve for a TLS configuration that would
// admit clients without a verified certificate.
var ErrInsecure = errors.New("registry: a TLS configuration that requires and verifies client certificates is required")

// Serve serves h over TLS on ln until ctx is done, then shuts down and
// returns nil; it returns an error if ln fails first. It closes ln.
//
// tlsCfg must require and verify client certificates
// (ca.ServerTLS(roots, id, ca.Policy{Revoked: …}), without
// AllowAnonymous): the registry holds every image of the swarm and
// admits its nodes only. Refused handshakes are logged at warn level.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, tlsCfg *tls.Config, log *slog.Logger) error {
	if tlsCfg == nil || tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert {
		ln.Close()
		return ErrInsecure
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "registry", "net.addr", ln.Addr().String())
	srv := &http.Server{
		Handler:   h,
		TLSConfig: tlsCfg.Clone(),
		// No read or write timeout: a layer may take minutes on a slow
		// link. A client that sends no request is dropped, though.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("registry: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("registry shutdown: requests in flight cut", "err", err)
		srv.Close()
	}
	<-errc
	return nil
}
