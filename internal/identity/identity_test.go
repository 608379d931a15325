package identity

import (
	"strings"
	"testing"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewID()
		if len(id) != Len {
			t.Fatalf("id %q has length %d, want %d", id, len(id), Len)
		}
		if strings.Trim(id, alphabet) != "" {
			t.Fatalf("id %q has characters outside base36", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
	}
}
