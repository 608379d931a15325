package ca

import (
	"errors"
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	s, err := NewToken(c)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s, "SHL-1-"+c.Digest()+"-") || len(s) != len("SHL-1-")+50+1+25 {
		t.Errorf("token %q: want SHL-1-<digest>-<25 characters>", s)
	}
	tok, err := ParseToken(" " + s + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if tok.Digest != c.Digest() || len(tok.Secret) != 25 || !isBase36(tok.Secret) {
		t.Errorf("parsed %+v", tok)
	}
	if tok.Encode() != s {
		t.Errorf("Encode = %q, want %q", tok.Encode(), s)
	}
	if str := tok.String(); strings.Contains(str, tok.Secret) || !strings.HasPrefix(str, "SHL-1-"+c.Digest()) {
		t.Errorf("String = %q: want the digest without the secret", str)
	}
	s2, err := NewToken(c)
	if err != nil {
		t.Fatal(err)
	}
	if s2 == s {
		t.Error("two tokens are equal")
	}
}

func TestParseTokenErrors(t *testing.T) {
	digest := strings.Repeat("a", 50)
	secret := "s3cr3tpart0123456789abcde" // 25 characters
	tests := []struct {
		name, in, want string
	}{
		{"empty", "  ", "it is empty"},
		{"swarmkit token", "SWMTKN-1-" + digest + "-" + secret, `it does not start with "SHL-"`},
		{"lower-case prefix", "shl-1-" + digest + "-" + secret, `it does not start with "SHL-"`},
		{"no version", "SHL", "it has no version"},
		{"empty version", "SHL--" + digest + "-" + secret, "it has no version"},
		{"version 2", "SHL-2-" + digest + "-" + secret, `version "2" is not supported (this node understands version 1)`},
		{"odd version", "SHL-" + secret + "-" + digest, "its version is not 1"},
		{"no secret", "SHL-1-" + digest, "it has 3 parts separated by '-', not 4"},
		{"extra part", "SHL-1-" + digest + "-" + secret + "-x", "it has 5 parts"},
		{"short digest", "SHL-1-abc-" + secret, "the CA digest is 3 characters long, not 50"},
		{"upper-case digest", "SHL-1-" + strings.Repeat("A", 50) + "-" + secret, "the CA digest holds characters other than 0-9 and a-z"},
		{"short secret", "SHL-1-" + digest + "-" + secret[:24], "the secret is 24 characters long, not 25"},
		{"long secret", "SHL-1-" + digest + "-" + secret + "z", "the secret is 26 characters long, not 25"},
		{"secret with a symbol", "SHL-1-" + digest + "-" + secret[:24] + "!", "the secret holds characters other than 0-9 and a-z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in)
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("ParseToken: %v, want ErrBadToken", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid join token: ") || !strings.Contains(msg, tt.want) ||
				!strings.HasSuffix(msg, "expected the form SHL-1-<ca digest>-<secret>") {
				t.Errorf("message %q: want %q and the expected form", msg, tt.want)
			}
			for _, leak := range []string{secret, secret[:24], "s3cr3t"} {
				if strings.Contains(msg, leak) {
					t.Errorf("message %q shows the secret", msg)
				}
			}
		})
	}
}

func TestCheckCA(t *testing.T) {
	c := newTestCA(t, "cluster1", testNow)
	other := newTestCA(t, "cluster2", testNow)
	s, err := NewToken(c)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.CheckCA(c.CertPEM); err != nil {
		t.Errorf("right CA: %v", err)
	}
	err = tok.CheckCA(other.CertPEM)
	if !errors.Is(err, ErrWrongCA) || !strings.Contains(err.Error(), "the manager's CA certificate does not match the join token's digest") ||
		!strings.Contains(err.Error(), "cluster cluster2") {
		t.Errorf("other CA: %v", err)
	}
	if err := tok.CheckCA([]byte("junk")); !errors.Is(err, ErrWrongCA) {
		t.Errorf("no certificate: %v", err)
	}
}

func TestSecretEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "abcd", false},
		{"abc", "", false},
		{"ABC", "abc", false},
	}
	for _, tt := range tests {
		if got := SecretEqual(tt.a, tt.b); got != tt.want {
			t.Errorf("SecretEqual(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}

func TestMatchToken(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	other := newTestCA(t, "c2", testNow)
	tok := func(c *CA) string {
		s, err := NewToken(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	worker, manager, foreign := tok(c), tok(c), tok(other)
	rotated := tok(c) // the worker token after `join-token --rotate worker`

	tests := []struct {
		name, presented, worker, manager string
		wantRole, wantMsg                string
	}{
		{"worker token", worker, worker, manager, RoleWorker, ""},
		{"manager token", manager, worker, manager, RoleManager, ""},
		{"pasted with a newline", manager + "\n", worker, manager, RoleManager, ""},
		{"old worker token after rotation", worker, rotated, manager, "", "not this swarm's current token (it may have been rotated)"},
		{"token of another swarm", foreign, worker, manager, "", "it names another CA than this swarm's"},
		{"malformed", "SHL-1-x", worker, manager, "", "expected the form"},
		{"no tokens yet", worker, "", "", "", "not this swarm's current token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			role, err := MatchToken(tt.presented, tt.worker, tt.manager)
			if tt.wantMsg == "" {
				if err != nil || role != tt.wantRole {
					t.Errorf("MatchToken = %q, %v; want %q", role, err, tt.wantRole)
				}
				return
			}
			if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("MatchToken: %v, want ErrBadToken containing %q", err, tt.wantMsg)
			}
			if p, perr := ParseToken(tt.presented); perr == nil && strings.Contains(err.Error(), p.Secret) {
				t.Errorf("message %q shows the secret", err)
			}
		})
	}
}
