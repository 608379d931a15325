package cli

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotImplemented is what the image and container commands return until
// a manager serves a node-local API.
var ErrNotImplemented = errors.New("not implemented by this manager yet")

// NodeAPI is what the `image` and `container` commands need from one node:
// its image store and its containers. NodeClient serves it over the node
// API (proto/node/v1) of the manager the CLI talks to; tests supply a fake.
type NodeAPI interface {
	ImageList(ctx context.Context, all bool) ([]ImageSummary, error)
	// ImageImport makes an image from a rootfs tarball; returns its id.
	ImageImport(ctx context.Context, src io.Reader, ref string, opts ImageImportOptions) (string, error)
	// ImageLoad loads a `docker save` or OCI archive; returns the loaded
	// references (or ids for untagged images).
	ImageLoad(ctx context.Context, src io.Reader) ([]LoadedImage, error)
	ImageRemove(ctx context.Context, ref string, force, noPrune bool) ([]ImageDeleteItem, error)
	ImagePrune(ctx context.Context, all bool) ([]ImageDeleteItem, uint64, error)

	ContainerList(ctx context.Context, all bool) ([]ContainerSummary, error)
	ContainerLogs(ctx context.Context, id string, opts ContainerLogsOptions, stdout, stderr io.Writer) error
	// ContainerExec runs a process in a container and returns its exit code.
	ContainerExec(ctx context.Context, id string, opts ExecOptions, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	// ContainerInspect returns the container as a JSON object.
	ContainerInspect(ctx context.Context, id string) ([]byte, error)
	ContainerTop(ctx context.Context, id string, psArgs []string) (titles []string, procs [][]string, err error)
}

// ImageSummary is one `image ls` entry.
type ImageSummary struct {
	ID          string // "sha256:…"
	RepoTags    []string
	RepoDigests []string
	Created     time.Time
	Size        int64
}

// ImageImportOptions are `image import`'s -c and -m.
type ImageImportOptions struct {
	Changes []string
	Message string
}

// LoadedImage is one image an archive held.
type LoadedImage struct {
	Ref string // "nginx:latest", empty for an untagged image
	ID  string
}

// ImageDeleteItem is one line of `image rm`/`image prune` output.
type ImageDeleteItem struct {
	Untagged string
	Deleted  string
}

// ContainerSummary is one `container ls` entry.
type ContainerSummary struct {
	ID      string
	Image   string
	Command string
	Created time.Time
	// Status is the state in words ("Up 5 minutes", "Exited (0) 2 minutes ago").
	Status string
	Ports  string
	Names  []string
	State  string
}

// ContainerLogsOptions are `container logs` flags.
type ContainerLogsOptions struct {
	Follow     bool
	Tail       int64
	Since      time.Time
	Timestamps bool
}

// ExecOptions are `container exec` flags.
type ExecOptions struct {
	Cmd         []string
	Interactive bool
	Tty         bool
	Detach      bool
	Env         []string
	User        string
	WorkDir     string
}

// UnimplementedNodeAPI fails every call with ErrNotImplemented.
type UnimplementedNodeAPI struct{}

// ImageList implements NodeAPI.
func (UnimplementedNodeAPI) ImageList(context.Context, bool) ([]ImageSummary, error) {
	return nil, ErrNotImplemented
}

// ImageImport implements NodeAPI.
func (UnimplementedNodeAPI) ImageImport(context.Context, io.Reader, string, ImageImportOptions) (string, error) {
	return "", ErrNotImplemented
}

// ImageLoad implements NodeAPI.
func (UnimplementedNodeAPI) ImageLoad(context.Context, io.Reader) ([]LoadedImage, error) {
	return nil, ErrNotImplemented
}

// ImageRemove implements NodeAPI.
func (UnimplementedNodeAPI) ImageRemove(context.Context, string, bool, bool) ([]ImageDeleteItem, error) {
	return nil, ErrNotImplemented
}

// ImagePrune implements NodeAPI.
func (UnimplementedNodeAPI) ImagePrune(context.Context, bool) ([]ImageDeleteItem, uint64, error) {
	return nil, 0, ErrNotImplemented
}

// ContainerList implements NodeAPI.
func (UnimplementedNodeAPI) ContainerList(context.Context, bool) ([]ContainerSummary, error) {
	return nil, ErrNotImplemented
}

// ContainerLogs implements NodeAPI.
func (UnimplementedNodeAPI) ContainerLogs(context.Context, string, ContainerLogsOptions, io.Writer, io.Writer) error {
	return ErrNotImplemented
}

// ContainerExec implements NodeAPI.
func (UnimplementedNodeAPI) ContainerExec(context.Context, string, ExecOptions, io.Reader, io.Writer, io.Writer) (int, error) {
	return 0, ErrNotImplemented
}

// ContainerInspect implements NodeAPI.
func (UnimplementedNodeAPI) ContainerInspect(context.Context, string) ([]byte, error) {
	return nil, ErrNotImplemented
}

// ContainerTop implements NodeAPI.
func (UnimplementedNodeAPI) ContainerTop(context.Context, string, []string) ([]string, [][]string, error) {
	return nil, nil, ErrNotImplemented
}
