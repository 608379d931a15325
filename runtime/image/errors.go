package image

import (
	"errors"
	"fmt"
)

// Sentinel error classes. Errors returned by the Store carry a message that
// names what went wrong and match one of these with errors.Is, so callers
// (and the gRPC edge) can classify them without parsing text.
var (
	// ErrNotFound means no image, tag or layer matches the reference.
	ErrNotFound = errors.New("not found")
	// ErrInUse means the image cannot be removed because a container uses it.
	ErrInUse = errors.New("in use")
	// ErrInvalid means the input (reference, archive, layer) is malformed or
	// unsafe.
	ErrInvalid = errors.New("invalid")
)

// classError is an error whose text is just its message while errors.Is
// still matches its class, so that "no such image: x" reads the way Docker
// prints it instead of "no such image: x: not found".
type classError struct {
	class error
	err   error
}

func (e *classError) Error() string   { return e.err.Error() }
func (e *classError) Unwrap() []error { return []error{e.err, e.class} }

func classf(class error, format string, args ...any) error {
	return &classError{class: class, err: fmt.Errorf(format, args...)}
}

func invalidf(format string, args ...any) error { return classf(ErrInvalid, format, args...) }

func notFoundf(format string, args ...any) error { return classf(ErrNotFound, format, args...) }
