package ca

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
)

const (
	tokenPrefix  = "SHL"
	tokenVersion = "1"
	// secretLen base-36 digits hold the 128 random bits of a secret
	// (36^25 > 2^128), zero-padded like the digest.
	secretLen = 25
	// tokenForm is what every malformed-token message shows.
	tokenForm = "SHL-1-<ca digest>-<secret>"
)

// Token is a parsed join token, SHL-1-<digest>-<secret>. Digest names the
// swarm's CA (CA.Digest): a joining node checks it before it trusts a
// manager. Secret is 25 base-36 characters of 128 random bits; whoever
// knows it may join with the token's role.
type Token struct {
	Digest string
	Secret string
}

// NewToken makes a join token for the swarm of ca. A swarm has two, one
// per role; rotating one means storing a new one, after which MatchToken
// refuses the old.
func NewToken(ca *CA) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new join token: %w", err)
	}
	s := new(big.Int).SetBytes(b[:]).Text(36)
	return Token{Digest: ca.Digest(), Secret: strings.Repeat("0", secretLen-len(s)) + s}.Encode(), nil
}

// Encode returns the token as users type it.
func (t Token) Encode() string {
	return tokenPrefix + "-" + tokenVersion + "-" + t.Digest + "-" + t.Secret
}

// String returns the token with its secret hidden, so that logging a Token
// does not leak it.
func (t Token) String() string {
	return tokenPrefix + "-" + tokenVersion + "-" + t.Digest + "-<secret>"
}

// ParseToken parses a join token. Surrounding white space, as a paste may
// bring, is ignored. Its errors wrap ErrBadToken, say what is wrong and
// show the expected form, but never the secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	bad := func(format string, args ...any) (Token, error) {
		return Token{}, &certError{kind: ErrBadToken,
			msg: "invalid join token: " + fmt.Sprintf(format, args...) + "; expected the form " + tokenForm}
	}
	if s == "" {
		return bad("it is empty")
	}
	parts := strings.Split(s, "-")
	if parts[0] != tokenPrefix {
		return bad("it does not start with %q", tokenPrefix+"-")
	}
	if len(parts) < 2 || parts[1] == "" {
		return bad("it has no version after %q", tokenPrefix+"-")
	}
	if parts[1] != tokenVersion {
		if len(parts[1]) <= 4 && isBase36(parts[1]) {
			return bad("version %q is not supported (this node understands version %s)", parts[1], tokenVersion)
		}
		return bad("its version is not %s", tokenVersion)
	}
	if len(parts) != 4 {
		return bad("it has %d parts separated by '-', not 4", len(parts))
	}
	digest, secret := parts[2], parts[3]
	if len(digest) != digestLen {
		return bad("the CA digest is %d characters long, not %d", len(digest), digestLen)
	}
	if !isBase36(digest) {
		return bad("the CA digest holds characters other than 0-9 and a-z")
	}
	if len(secret) != secretLen {
		return bad("the secret is %d characters long, not %d", len(secret), secretLen)
	}
	if !isBase36(secret) {
		return bad("the secret holds characters other than 0-9 and a-z")
	}
	return Token{Digest: digest, Secret: secret}, nil
}

func isBase36(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return s != ""
}

// CheckCA is the joining node's check of the CA certificate a manager
// hands it: its digest must be the token's. It returns an error wrapping
// ErrWrongCA otherwise.
func (t Token) CheckCA(certPEM []byte) error {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return &certError{kind: ErrWrongCA, cause: err, msg: "the manager sent no valid CA certificate: " + err.Error()}
	}
	if digestDER(cert.Raw) != t.Digest {
		return errWrongPin(cert)
	}
	return nil
}

func errWrongPin(cert *x509.Certificate) error {
	msg := "the manager's CA certificate does not match the join token's digest: the token is for another swarm, or something between this node and the manager is intercepting the connection"
	if cert != nil {
		msg += fmt.Sprintf(" (the manager's CA is of cluster %s)", clusterOf(cert))
	}
	return &certError{kind: ErrWrongCA, msg: msg}
}

// SecretEqual compares two secrets, or two whole tokens, in time that does
// not depend on where they differ.
func SecretEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// MatchToken is the manager's check of a join token: it returns the role
// the presented token grants, comparing it with the swarm's current
// worker and manager tokens in constant time. A rotated token, or one of
// another swarm, fails with an error wrapping ErrBadToken.
func MatchToken(presented, workerToken, managerToken string) (string, error) {
	t, err := ParseToken(presented)
	if err != nil {
		return "", err
	}
	p := t.Encode()
	// Compare with both before deciding, so timing does not tell which
	// role a guess came close to.
	w := workerToken != "" && SecretEqual(p, workerToken)
	m := managerToken != "" && SecretEqual(p, managerToken)
	switch {
	case m:
		return RoleManager, nil
	case w:
		return RoleWorker, nil
	}
	for _, cur := range []string{workerToken, managerToken} {
		if c, err := ParseToken(cur); err == nil && c.Digest != t.Digest {
			return "", &certError{kind: ErrBadToken,
				msg: "invalid join token: it names another CA than this swarm's (a token of another swarm?)"}
		}
	}
	return "", &certError{kind: ErrBadToken,
		msg: "invalid join token: it is not this swarm's current token (it may have been rotated); run 'shoal swarm join-token worker' or 'shoal swarm join-token manager' on a manager to see the current one"}
}
