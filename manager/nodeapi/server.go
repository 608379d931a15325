// Package nodeapi serves the node API (proto/node/v1): the images and
// containers of the node the manager runs on, for `shoal image …` and
// `shoal container …`. It is a thin gRPC adapter over the node's container
// runtime; the only logic of its own is what Docker's daemon adds on top
// of its store: `import --change` parsing, status words, the inspect JSON
// shape and `top` through ps(1).
package nodeapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/image"
	"github.com/shoal-dev/shoal/runtime/logs"
)

// Runtime is what the server needs of the node's container runtime;
// *runtime.Runtime has it.
type Runtime interface {
	Images() *image.Store
	List() []runtime.Container
	Inspect(ref string) (runtime.Container, error)
	Logs(ctx context.Context, ref string, opts logs.ReadOptions, fn func(logs.Entry) error) error
	Top(ref string) ([]runtime.Process, error)
	Exec(ctx context.Context, ref string, o runtime.ExecOptions) (int, error)
}

var _ Runtime = (*runtime.Runtime)(nil)

// Server implements nodev1.NodeServer over a Runtime.
type Server struct {
	nodev1.UnimplementedNodeServer

	rt  Runtime
	log *slog.Logger
	// now is the clock for status words ("Up 5 minutes").
	now func() time.Time
	// ps is the ps(1) program `top` runs; empty means look it up on $PATH.
	ps string
}

var _ nodev1.NodeServer = (*Server)(nil)

// New returns a node API server over rt.
func New(rt Runtime) *Server {
	return &Server{rt: rt, log: slog.Default().With("component", "nodeapi"), now: time.Now}
}

// errInvalid classifies requests this package rejects itself (a bad
// --change, a missing option).
var errInvalid = errors.New("invalid argument")

// chunkSize is the size of the data messages the server streams; well
// under gRPC's 4 MiB default message limit.
const chunkSize = 64 << 10

// imageError maps an image store error to a gRPC status at the edge, with
// Docker's texts: "No such image: x" for a missing image, the store's
// conflict text for an image in use.
func imageError(err error, ref string) error {
	if errors.Is(err, image.ErrNotFound) {
		// The store names the image in its normal form ("nginx:latest"),
		// as Docker does; keep that and only capitalise as Docker does.
		msg := err.Error()
		if i := strings.Index(msg, "no such image: "); i >= 0 {
			return status.Error(codes.NotFound, "No such image: "+msg[i+len("no such image: "):])
		}
		return status.Error(codes.NotFound, "No such image: "+ref)
	}
	return grpcError(err)
}

// containerError maps a runtime error about container ref to a gRPC
// status, with Docker's "No such container: x" for a missing one.
func containerError(err error, ref string) error {
	if errors.Is(err, runtime.ErrNotFound) {
		return status.Error(codes.NotFound, "No such container: "+ref)
	}
	return grpcError(err)
}

// grpcError maps the runtime's and the image store's error classes to
// gRPC codes. The runtime's errors read "<class>: <message>"; the class
// travels as the code, so only the message is sent.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	var class error
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, image.ErrNotFound):
		code, class = codes.NotFound, image.ErrNotFound
	case errors.Is(err, runtime.ErrNotFound):
		code, class = codes.NotFound, runtime.ErrNotFound
	case errors.Is(err, image.ErrInUse):
		code, class = codes.FailedPrecondition, image.ErrInUse
	case errors.Is(err, runtime.ErrNotRunning):
		code, class = codes.FailedPrecondition, runtime.ErrNotRunning
	case errors.Is(err, runtime.ErrConflict):
		code, class = codes.FailedPrecondition, runtime.ErrConflict
	case errors.Is(err, image.ErrInvalid):
		code, class = codes.InvalidArgument, image.ErrInvalid
	case errors.Is(err, runtime.ErrInvalid):
		code, class = codes.InvalidArgument, runtime.ErrInvalid
	case errors.Is(err, errInvalid):
		code, class = codes.InvalidArgument, errInvalid
	}
	msg := err.Error()
	if class != nil {
		msg = strings.TrimPrefix(msg, class.Error()+": ")
	}
	return status.Error(code, msg)
}

func invalidf(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}
