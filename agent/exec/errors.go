package exec

import "errors"

// Sentinel errors; callers test with errors.Is.
var (
	// ErrImageMissing means the task's image is not in the node's image
	// store. The agent does not pull: the task is rejected with the store's
	// message ("no such image: x") so that `service ps` says why.
	ErrImageMissing = errors.New("image missing")
	// ErrUnsupported means the task asks for something this executor cannot
	// do yet; the task is rejected rather than run without it.
	ErrUnsupported = errors.New("unsupported")
	// ErrTaskNoop is returned by Do when the task cannot move until its
	// desired state changes (it is where it should be, or ended).
	ErrTaskNoop = errors.New("exec: task noop")
	// ErrTaskRetry is returned by Do when the step was interrupted (its
	// context ended) and should be tried again; the status did not change.
	ErrTaskRetry = errors.New("exec: task retry")
)

// classError reads as its message alone while errors.Is still matches its
// class, so that a task's error says "no such image: x" and not
// "image missing: no such image: x".
type classError struct {
	class error
	err   error
}

func (e *classError) Error() string   { return e.err.Error() }
func (e *classError) Unwrap() []error { return []error{e.err, e.class} }
