package store

import (
	"errors"
	"fmt"
)

// Sentinel errors classify what went wrong; the errors the store returns
// carry a message naming the object and match one of these with errors.Is.
var (
	// ErrExist is returned when a create names an id that is already stored.
	ErrExist = errors.New("object already exists")
	// ErrNotExist is returned when an update or remove names an id that is
	// not stored.
	ErrNotExist = errors.New("object does not exist")
	// ErrSequenceConflict is returned when an update or remove carries a
	// meta.version other than the stored one: the writer read a state that
	// has changed since, and must read again and retry.
	ErrSequenceConflict = errors.New("update out of sequence")
	// ErrNameConflict is returned when a service, network, secret or config
	// would take a name another object of its table holds.
	ErrNameConflict = errors.New("name conflicts with an existing object")
	// ErrInvalid is returned for batches the store cannot make sense of
	// (unknown action kind, empty target, empty id, two actions on one
	// object) and for Find selectors a table has no field for.
	ErrInvalid = errors.New("invalid store request")
	// ErrWatchDropped is carried by the last event of a watch that the
	// store ended (the watcher fell behind, or the store was restored from
	// a snapshot): its consumer must re-list and watch again.
	ErrWatchDropped = errors.New("watch dropped")
)

// storeError keeps a message meant for users (`service name "web" is
// already in use`) while still matching its sentinel, so that the text is
// not cluttered with the sentinel's own words.
type storeError struct {
	msg  string
	kind error
}

func (e *storeError) Error() string { return e.msg }
func (e *storeError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &storeError{msg: fmt.Sprintf(format, args...), kind: kind}
}
