package ca

import (
	"crypto/x509"
	"time"
)

// RenewAt returns when a node should renew cert: halfway through its
// validity. Swarmkit picks a random point between 50% and 80%; the
// earliest leaves the most time for a node that is down or cut off when
// the moment comes, and signing is cheap enough that a swarm's nodes
// renewing close together does not matter. The validity counted includes
// the Backdate hour.
func RenewAt(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
}

// NeedsRenewal reports whether a node should renew cert at now: from
// RenewAt on, expired certificates included (though a node whose
// certificate has expired can no longer reach a manager to renew, and must
// join again).
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(RenewAt(cert))
}
