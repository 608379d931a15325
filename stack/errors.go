package stack

import (
	"errors"
	"fmt"
	"strings"

	"github.com/compose-spec/compose-go/v2/tree"
)

// ErrInvalid classifies every error about the content of compose files, so
// that callers can tell a bad file from an unreadable one with errors.Is.
var ErrInvalid = errors.New("invalid compose file")

// Error is a problem in a compose file, located so that a user can find it:
// "docker-compose.yml: services.web.deploy.mode: "glob" is not one of
// replicated, global".
type Error struct {
	// File is the compose file as the user named it ("-" is "<stdin>"), or
	// "" when no single file is to blame.
	File string
	// Key is the dotted path of the offending key, or "" for the whole file.
	Key string
	// Err says what is wrong.
	Err error

	// path is Key with the dots inside key names kept apart (sysctl names
	// have dots), for finding which file set the key.
	path tree.Path
}

// Error renders "file: key: problem", leaving out what is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *Error) Unwrap() error { return e.Err }

// Is makes every Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// keyErrorf is an error at key p; Load fills in the file.
func keyErrorf(p tree.Path, format string, args ...any) *Error {
	return &Error{Key: p.String(), Err: fmt.Errorf(format, args...), path: p}
}

// keyParts splits the key into the names of the nested keys.
func (e *Error) keyParts() []string {
	if e.Key == "" {
		return nil
	}
	if e.path == "" {
		return strings.Split(e.Key, ".")
	}
	parts := e.path.Parts()
	for i, s := range parts {
		parts[i] = tree.Path(s).String()
	}
	return parts
}

// keyPath builds a tree.Path from parts that may contain dots (label keys,
// service names never do, but sysctls do).
func keyPath(parts ...string) tree.Path {
	var p tree.Path
	for _, s := range parts {
		p = p.Next(s)
	}
	return p
}
