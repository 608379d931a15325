package ca

import (
	"testing"
	"time"
)

func TestNeedsRenewal(t *testing.T) {
	c := newTestCA(t, "c", testNow)
	n := issueNode(t, c, "node1", RoleWorker, testNow, DefaultValidity)
	// Valid from testNow-1h to testNow+90d: halfway is 45 days and 30
	// minutes after the backdated start.
	renewAt := testNow.Add(-Backdate).Add((DefaultValidity + Backdate) / 2)
	if got := RenewAt(n.leaf); !got.Equal(renewAt) {
		t.Fatalf("RenewAt = %v, want %v", got, renewAt)
	}
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"before NotBefore", testNow.Add(-2 * time.Hour), false},
		{"just issued", testNow, false},
		{"a day later", testNow.Add(24 * time.Hour), false},
		{"a second before halfway", renewAt.Add(-time.Second), false},
		{"halfway", renewAt, true},
		{"a second before expiry", testNow.Add(DefaultValidity - time.Second), true},
		{"expired", testNow.Add(DefaultValidity + time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NeedsRenewal(n.leaf, tt.now); got != tt.want {
				t.Errorf("NeedsRenewal at %v = %v, want %v", tt.now, got, tt.want)
			}
		})
	}
}
