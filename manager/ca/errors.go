package ca

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Error classes. Errors from this package wrap one of them, with a message
// that names the node and the reason, ready to show a user.
var (
	// ErrBadToken: a join token that is malformed, rotated or not this
	// swarm's.
	ErrBadToken = errors.New("invalid join token")
	// ErrWrongCA: a certificate or CA that is not this swarm's, or a
	// manager whose CA does not match the join token's digest.
	ErrWrongCA = errors.New("certificate authority mismatch")
	// ErrExpired: a certificate past its NotAfter.
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid: a certificate before its NotBefore, which points to
	// a clock that is wrong.
	ErrNotYetValid = errors.New("certificate not yet valid")
	// ErrRevoked: the certificate of a node removed from the swarm, or of
	// a role the node no longer has, as the Revoked check decides.
	ErrRevoked = errors.New("certificate revoked")
	// ErrRefused: the peer refused this node's certificate without saying
	// why (TLS "bad certificate" alert). A shoal server sends it when the
	// node was removed from the swarm or its role may not connect there.
	ErrRefused = errors.New("certificate refused by peer")
	// ErrBadCertificate: a certificate that is not a valid shoal node
	// certificate for this use (no identity, wrong role, wrong name).
	ErrBadCertificate = errors.New("bad certificate")
)

var classes = []error{ErrBadToken, ErrWrongCA, ErrExpired, ErrNotYetValid, ErrRevoked, ErrRefused, ErrBadCertificate}

// certError is an error of a class with a message written for users. Its
// cause, if any, stays reachable through errors.As.
type certError struct {
	kind  error
	msg   string
	cause error
}

func (e *certError) Error() string { return e.msg }

func (e *certError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// Explain turns an error from a TLS handshake, or from the first read or
// write after it, into one of this package's classes with a message for
// users. It understands both sides of a refusal:
//
//   - the local side's verification of the peer (crypto/tls's
//     CertificateVerificationError): expired, not yet valid, issued by
//     another CA, not a manager;
//   - the peer's refusal of this node's certificate, which arrives as a TLS
//     alert ("remote error: tls: expired certificate"; under TLS 1.3 a
//     client sees it on its first read, not from Handshake).
//
// Errors already classified, and errors it does not recognise, are
// returned unchanged; nil stays nil.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range classes {
		if errors.Is(err, k) {
			return err
		}
	}
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok && len(cve.UnverifiedCertificates) > 0 {
		return classifyVerify(cve.Err, cve.UnverifiedCertificates[0])
	}
	msg := err.Error()
	for _, a := range remoteAlerts {
		if strings.Contains(msg, "remote error: tls: "+a.alert) {
			return &certError{kind: a.kind, msg: a.msg, cause: err}
		}
	}
	return err
}

var remoteAlerts = []struct {
	alert string
	kind  error
	msg   string
}{
	{"expired certificate", ErrExpired,
		"the peer refused this node's certificate as expired or not yet valid (a node whose certificate expired must leave the swarm and join again; otherwise check both machines' clocks)"},
	{"unknown certificate authority", ErrWrongCA,
		"the peer refused this node's certificate: it was issued by another swarm's CA"},
	{"bad certificate", ErrRefused,
		"the peer refused this node's certificate: the node may have been removed from the swarm (leave and join again), or its role may not connect there"},
	{"revoked certificate", ErrRevoked,
		"the peer refused this node's certificate: it has been revoked (node removed from the swarm)"},
	{"certificate required", ErrRefused,
		"the peer requires a certificate: this node has not joined the swarm"},
}

// classifyVerify explains why x509 verification of cert failed.
func classifyVerify(err error, cert *x509.Certificate) error {
	if inv, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		c := inv.Cert
		if c == nil {
			c = cert
		}
		switch inv.Reason {
		case x509.Expired:
			if strings.Contains(inv.Detail, "is before") {
				return &certError{kind: ErrNotYetValid, cause: err,
					msg: fmt.Sprintf("certificate of %s is not valid before %s (is a clock wrong?)", describe(c), stamp(c.NotBefore))}
			}
			return &certError{kind: ErrExpired, cause: err,
				msg: fmt.Sprintf("certificate of %s expired at %s", describe(c), stamp(c.NotAfter))}
		case x509.IncompatibleUsage:
			return &certError{kind: ErrBadCertificate, cause: err,
				msg: fmt.Sprintf("certificate of %s may not be used for this connection (key usage)", describe(c))}
		}
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return &certError{kind: ErrWrongCA, cause: err,
			msg: fmt.Sprintf("certificate of %s (cluster %s) was not issued by this swarm's CA", describe(cert), clusterOf(cert))}
	}
	if h, ok := errors.AsType[x509.HostnameError](err); ok {
		if h.Host == ManagerName {
			return &certError{kind: ErrBadCertificate, cause: err,
				msg: fmt.Sprintf("%s is not a manager: its certificate does not name %s", describe(cert), ManagerName)}
		}
		return &certError{kind: ErrBadCertificate, cause: err,
			msg: fmt.Sprintf("certificate of %s is not valid for %s", describe(cert), h.Host)}
	}
	return &certError{kind: ErrBadCertificate, cause: err,
		msg: fmt.Sprintf("certificate of %s is not valid: %v", describe(cert), err)}
}
