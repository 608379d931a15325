package allocator

import (
	"errors"
	"fmt"
)

// Sentinel errors classify what went wrong; the errors the allocator
// returns carry a message meant for `service ps` and match one of these
// with errors.Is, so that the caller can tell "wait and retry" from "the
// user must change something".
var (
	// ErrExhausted is returned when a network has no free address or the
	// dynamic port range no free port. Freeing (tasks ending, services
	// removed) may cure it.
	ErrExhausted = errors.New("no free address or port")
	// ErrInUse is returned when an explicitly requested subnet, address or
	// published port is taken by another object, and by New when the
	// stored objects claim one address or port twice.
	ErrInUse = errors.New("already in use")
	// ErrNotFound is returned when a service or task attaches to a network
	// the allocator does not know.
	ErrNotFound = errors.New("network not found")
	// ErrNotAllocated is returned when a service or task needs a network
	// (or a task its service) that has not been allocated yet; allocating
	// networks, then services, then tasks in one pass avoids it.
	ErrNotAllocated = errors.New("not allocated yet")
	// ErrInvalid is returned for IPAM settings or addresses that make no
	// sense (a gateway outside its subnet, an IPv6 subnet, a malformed
	// address).
	ErrInvalid = errors.New("invalid allocation request")
)

// allocError keeps a user-facing message ("could not find an available IP
// on network web_default") while matching its sentinel, so that the text is
// not cluttered with the sentinel's own words.
type allocError struct {
	msg  string
	kind error
}

func (e *allocError) Error() string { return e.msg }
func (e *allocError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &allocError{msg: fmt.Sprintf(format, args...), kind: kind}
}
