// Package runtime runs one node's containers with Linux namespaces, cgroups
// and overlayfs, without a container engine. Each container is a directory
// under <root>/containers/<id> (its record, rootfs upper dir, logs) and, while
// it runs, one shoal-init process (package pid1) that is PID 1 inside it.
// Because the init owns the container's logs and exit record, containers
// outlive the process that created them; Open re-adopts them.
package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/shoal-dev/shoal/runtime/image"
)

// Sentinel errors; callers test with errors.Is.
var (
	ErrNotFound   = errors.New("not found")
	ErrConflict   = errors.New("conflict")
	ErrInvalid    = errors.New("invalid argument")
	ErrNotRunning = errors.New("not running")
)

// Options configure a Runtime.
type Options struct {
	// Root is the data directory: containers/, images/ and volumes/ live below it.
	Root string
	// RunDir holds the containers' exec sockets; keep it short (unix socket
	// paths hold 107 bytes). Default /run/shoal.
	RunDir string
	// InitPath is the shoal-init binary; default: beside the running
	// executable, else "shoal-init" on $PATH.
	InitPath string
	// CgroupParent is the cgroup under which containers are placed; default "shoal".
	CgroupParent string
	Logger       *slog.Logger
}

// Runtime manages the containers of one node.
type Runtime struct {
	opts   Options
	images *image.Store
	log    *slog.Logger

	mu         sync.Mutex
	containers map[string]*ctr
	watcher    *pidWatcher
}

// ctr is a container with its in-memory state.
type ctr struct {
	mu     sync.Mutex
	c      Container
	dir    string
	exited chan struct{} // closed when the running init has ended and the exit is recorded
}

// Open opens (creating if needed) the runtime's state under opts.Root and
// re-adopts containers whose init is still running.
func Open(opts Options) (*Runtime, error) {
	if opts.Root == "" {
		return nil, fmt.Errorf("runtime: %w: no root directory", ErrInvalid)
	}
	if opts.RunDir == "" {
		opts.RunDir = "/run/shoal"
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "shoal"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InitPath == "" {
		p, err := findInit()
		if err != nil {
			return nil, err
		}
		opts.InitPath = p
	}
	for _, d := range []string{opts.Root, filepath.Join(opts.Root, "containers"), filepath.Join(opts.Root, "volumes"), opts.RunDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime: %w", err)
		}
	}
	imgs, err := image.Open(filepath.Join(opts.Root, "images"))
	if err != nil {
		return nil, fmt.Errorf("runtime: image store: %w", err)
	}
	r := &Runtime{opts: opts, images: imgs, log: opts.Logger.With("component", "runtime"), containers: map[string]*ctr{}}
	imgs.InUse = r.imageInUse
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func findInit() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "shoal-init")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("shoal-init"); err == nil {
		return p, nil
	}
	return "", errors.New("runtime: shoal-init not found beside this program or on $PATH (build it with `make build`)")
}

// Images is the node's image store.
func (r *Runtime) Images() *image.Store { return r.images }

func (r *Runtime) imageInUse(id string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.containers {
		if c.c.ImageID == id {
			return c.c.ID, true
		}
	}
	return "", false
}

func (r *Runtime) containersDir() string { return filepath.Join(r.opts.Root, "containers") }

const recordFile = "container.json"

// save writes the container's record atomically. Callers hold c.mu.
func (c *ctr) save() error {
	b, err := json.MarshalIndent(c.c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, recordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.dir, recordFile))
}

// load reads every container record; a directory without a record is the
// remains of a create that did not finish, and is removed.
func (r *Runtime) load() error {
	ents, err := os.ReadDir(r.containersDir())
	if err != nil {
		return fmt.Errorf("runtime: %w", err)
	}
	for _, e := range ents {
		dir := filepath.Join(r.containersDir(), e.Name())
		b, err := os.ReadFile(filepath.Join(dir, recordFile))
		if err != nil {
			r.log.Warn("removing incomplete container directory", "container.id", e.Name(), "err", err)
			_ = os.RemoveAll(dir)
			continue
		}
		c := &ctr{dir: dir}
		if err := json.Unmarshal(b, &c.c); err != nil {
			return fmt.Errorf("runtime: container %s: corrupt record: %w", e.Name(), err)
		}
		r.containers[c.c.ID] = c
		if c.c.State == Running {
			r.adopt(c)
		}
	}
	return nil
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lookup finds a container by full ID, name, or unique ID prefix.
func (r *Runtime) lookup(ref string) (*ctr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.containers[ref]; ok {
		return c, nil
	}
	var found *ctr
	for _, c := range r.containers {
		if c.c.Name == ref {
			return c, nil
		}
	}
	for id, c := range r.containers {
		if len(ref) >= 4 && strings.HasPrefix(id, ref) {
			if found != nil {
				return nil, fmt.Errorf("%w: container ID prefix %s is ambiguous", ErrInvalid, ref)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no such container: %s", ErrNotFound, ref)
	}
	return found, nil
}

// Inspect returns a copy of the container's record.
func (r *Runtime) Inspect(ref string) (Container, error) {
	c, err := r.lookup(ref)
	if err != nil {
		return Container{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c, nil
}

// List returns every container, newest first.
func (r *Runtime) List() []Container {
	r.mu.Lock()
	all := make([]*ctr, 0, len(r.containers))
	for _, c := range r.containers {
		all = append(all, c)
	}
	r.mu.Unlock()
	out := make([]Container, 0, len(all))
	for _, c := range all {
		c.mu.Lock()
		out = append(out, c.c)
		c.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Close stops watching containers; they keep running.
func (r *Runtime) Close() error {
	r.mu.Lock()
	w := r.watcher
	r.watcher = nil
	r.mu.Unlock()
	if w != nil {
		w.close()
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
