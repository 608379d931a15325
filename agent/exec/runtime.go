package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/image"
)

// Runtime is what the executor needs of a node's container runtime
// (*runtime.Runtime).
type Runtime interface {
	Images() *image.Store
	Create(s runtime.Spec) (runtime.Container, error)
	Start(ref string) error
	Wait(ctx context.Context, ref string) (runtime.Exit, error)
	Stop(ctx context.Context, ref string, timeout *time.Duration) error
	Remove(ctx context.Context, ref string, force bool) error
	Inspect(ref string) (runtime.Container, error)
	List() []runtime.Container
}

var _ Runtime = (*runtime.Runtime)(nil)

// RuntimeExecutor runs tasks as containers of the node's runtime. Images
// are used as they are in the local store: unlike Docker, which tries a
// pull on every task start, no registry is contacted, so a missing image
// rejects the task at once.
type RuntimeExecutor struct {
	Runtime Runtime
	// Network chooses the task's network namespace. It is the seam for
	// bridge and overlay networks; nil means DefaultNetwork.
	Network func(t *typesv1.Task) (runtime.Network, error)
	// Hostname overrides the node's hostname in Describe (tests, several
	// nodes on one machine).
	Hostname string
	// Version is the shoal version reported in Describe.
	Version string
	Logger  *slog.Logger
	// BeforeStop, when set, runs before a task's container gets its stop
	// signal: the load balancer takes the task out of rotation there, so
	// no new connection reaches a task that is going away.
	BeforeStop func(t *typesv1.Task)
	// Pull, when set, fetches an image the node lacks (from the managers'
	// registries, or the registry the reference names); without it, or
	// when it fails, a missing image rejects the task.
	Pull func(ctx context.Context, ref string) error
	// Publish, when set, runs in Prepare once the task has its network
	// namespace, before its container is made: mode host ports are bound
	// there, and its error (naming the port) fails the task.
	Publish func(t *typesv1.Task) error
	// AfterRemove, when set, runs once a task's container is gone: the
	// network package releases the task's namespace and veths there.
	AfterRemove func(t *typesv1.Task)
}

var (
	_ Executor   = (*RuntimeExecutor)(nil)
	_ TaskLister = (*RuntimeExecutor)(nil)
)

// DefaultNetwork gives tasks with network mode "host" the host's network
// and every other task a namespace of its own with only loopback, until
// the network package attaches tasks to their services' networks.
func DefaultNetwork(t *typesv1.Task) (runtime.Network, error) {
	if t.GetSpec().GetContainer().GetNetworkMode() == "host" {
		return runtime.Network{Mode: runtime.NetworkHost}, nil
	}
	return runtime.Network{Mode: runtime.NetworkNone}, nil
}

// Controller implements Executor.
func (e *RuntimeExecutor) Controller(t *typesv1.Task) (Controller, error) {
	if t.GetId() == "" {
		return nil, fmt.Errorf("%w: task without an ID", runtime.ErrInvalid)
	}
	log := e.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &runtimeController{
		e:    e,
		task: t,
		name: ContainerName(t),
		log:  log.With("component", "agent", "task.id", t.Id, "container.name", ContainerName(t)),
	}, nil
}

// Describe implements Executor: the node's hostname, platform and
// capacity, which the scheduler matches constraints and reservations
// against.
func (e *RuntimeExecutor) Describe() *typesv1.NodeDescription {
	host := e.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	d := &typesv1.NodeDescription{
		Hostname:     host,
		Os:           goruntime.GOOS,
		Architecture: dockerArch(goruntime.GOARCH),
		Version:      e.Version,
		Resources:    &typesv1.Resources{NanoCpus: int64(goruntime.NumCPU()) * 1e9},
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		d.Resources.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	return d
}

// dockerArch names the architecture as `uname -m` does, which is what
// Docker reports and what users write in `node.platform.arch`
// constraints.
func dockerArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i386"
	}
	return goarch
}

// ListTasks implements TaskLister from the labels of the runtime's
// containers; containers without a task label (not made by an agent) are
// not listed.
func (e *RuntimeExecutor) ListTasks(context.Context) ([]*typesv1.Task, error) {
	var out []*typesv1.Task
	for _, c := range e.Runtime.List() {
		l := c.Spec.Labels
		id := l[LabelTaskID]
		if id == "" {
			continue
		}
		out = append(out, &typesv1.Task{
			Id:                 id,
			ServiceId:          l[LabelServiceID],
			NodeId:             l[LabelNodeID],
			Annotations:        &typesv1.Annotations{Name: l[LabelTaskName]},
			ServiceAnnotations: &typesv1.Annotations{Name: l[LabelServiceName]},
		})
	}
	return out, nil
}

// runtimeController finds its container by name on every call rather than
// remembering an ID: the name is derived from the task, so a controller
// made after an agent restart finds the container an earlier one made.
type runtimeController struct {
	e    *RuntimeExecutor
	task *typesv1.Task
	name string
	log  *slog.Logger

	mu sync.Mutex // serialises Prepare against itself (create once)
}

var (
	_ Controller        = (*runtimeController)(nil)
	_ ContainerStatuser = (*runtimeController)(nil)
)

// container returns the task's container, or ok false if there is none.
func (c *runtimeController) container() (runtime.Container, bool, error) {
	ctr, err := c.e.Runtime.Inspect(c.name)
	if errors.Is(err, runtime.ErrNotFound) {
		return runtime.Container{}, false, nil
	}
	if err != nil {
		return runtime.Container{}, false, err
	}
	return ctr, true, nil
}

// Adopt implements Controller. A container that was created but never
// started is not adopted: nothing of the task ran, so it goes through
// Prepare (which reuses the container) and Start like a new one.
func (c *runtimeController) Adopt() (bool, error) {
	ctr, ok, err := c.container()
	if err != nil || !ok {
		return false, err
	}
	if ctr.State == runtime.Created {
		return false, nil
	}
	c.log.Info("adopting container", "container.id", ctr.ID, "container.state", ctr.State)
	return true, nil
}

// Prepare implements Controller.
func (c *runtimeController) Prepare(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok, err := c.container(); err != nil || ok {
		return err
	}
	img := c.task.GetSpec().GetContainer().GetImage()
	if _, err := c.e.Runtime.Images().Get(img); err != nil {
		if !errors.Is(err, image.ErrNotFound) {
			return fmt.Errorf("image %s: %w", img, err)
		}
		if c.e.Pull == nil {
			return &classError{class: ErrImageMissing, err: err}
		}
		c.log.Info("pulling image", "image", img)
		if perr := c.e.Pull(ctx, img); perr != nil {
			return &classError{class: ErrImageMissing, err: fmt.Errorf("%w; %v", err, perr)}
		}
	}
	netFn := c.e.Network
	if netFn == nil {
		netFn = DefaultNetwork
	}
	net, err := netFn(c.task)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	if c.e.Publish != nil {
		if err := c.e.Publish(c.task); err != nil {
			return err
		}
	}
	spec, err := ContainerSpec(c.task, net)
	if err != nil {
		return err
	}
	ctr, err := c.e.Runtime.Create(spec)
	if err != nil {
		return err
	}
	c.log.Info("created container", "container.id", ctr.ID)
	return nil
}

// Start implements Controller. It prepares first if needed, since an
// agent restarted between Prepare and Start finds the task STARTING with
// no container. A container that already ran is not started again: a
// task runs once, and Wait will report how it ended.
func (c *runtimeController) Start(ctx context.Context) error {
	ctr, ok, err := c.container()
	if err != nil {
		return err
	}
	if !ok {
		if err := c.Prepare(ctx); err != nil {
			return err
		}
		if ctr, _, err = c.container(); err != nil {
			return err
		}
	}
	if ctr.State != runtime.Created {
		return nil
	}
	if err := c.e.Runtime.Start(ctr.ID); err != nil {
		return err
	}
	c.log.Info("started container", "container.id", ctr.ID)
	return nil
}

// Wait implements Controller.
func (c *runtimeController) Wait(ctx context.Context) (ExitInfo, error) {
	ctr, ok, err := c.container()
	if err != nil {
		return ExitInfo{}, err
	}
	if !ok {
		return ExitInfo{}, fmt.Errorf("container %s is gone", c.name)
	}
	e, err := c.e.Runtime.Wait(ctx, ctr.ID)
	if err != nil {
		return ExitInfo{}, err
	}
	return ExitInfo{ExitCode: e.Code, OOMKilled: e.OOMKilled, FinishedAt: e.FinishedAt}, nil
}

// Shutdown implements Controller. The stop signal and grace period were
// recorded with the container at create (from the task, default 10 s), so
// the runtime's defaults are the task's.
func (c *runtimeController) Shutdown(ctx context.Context) error {
	if c.e.BeforeStop != nil {
		c.e.BeforeStop(c.task)
	}
	ctr, ok, err := c.container()
	if err != nil || !ok {
		return err
	}
	if err := c.e.Runtime.Stop(ctx, ctr.ID, nil); err != nil {
		return err
	}
	c.log.Info("stopped container", "container.id", ctr.ID)
	return nil
}

// Terminate implements Controller.
func (c *runtimeController) Terminate(ctx context.Context) error {
	ctr, ok, err := c.container()
	if err != nil || !ok {
		return err
	}
	zero := time.Duration(0)
	return c.e.Runtime.Stop(ctx, ctr.ID, &zero)
}

// Remove implements Controller.
func (c *runtimeController) Remove(ctx context.Context) error {
	if c.e.BeforeStop != nil {
		c.e.BeforeStop(c.task)
	}
	ctr, ok, err := c.container()
	if err != nil {
		return err
	}
	if ok {
		if err := c.e.Runtime.Remove(ctx, ctr.ID, true); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return err
		}
		c.log.Info("removed container", "container.id", ctr.ID)
	}
	if c.e.AfterRemove != nil {
		c.e.AfterRemove(c.task)
	}
	return nil
}

// ContainerStatus implements ContainerStatuser.
func (c *runtimeController) ContainerStatus(context.Context) (*typesv1.ContainerStatus, error) {
	ctr, ok, err := c.container()
	if err != nil || !ok {
		return nil, err
	}
	return &typesv1.ContainerStatus{
		ContainerId: ctr.ID,
		Pid:         int32(ctr.Pid),
		ExitCode:    int32(ctr.ExitCode),
		OomKilled:   ctr.OOMKilled,
	}, nil
}
