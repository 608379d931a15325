// Package exectest holds stubs of package exec's interfaces, so that the
// agent and Do can be tested without containers (swarmkit's
// StubController).
package exectest

import (
	"context"
	"sync"

	"github.com/shoal-dev/shoal/agent/exec"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Controller is an exec.Controller whose methods call the matching Fn
// field when it is set and succeed otherwise (Wait then blocks until ctx
// ends, as a container that runs forever). It counts the calls.
type Controller struct {
	PrepareFn         func(ctx context.Context) error
	StartFn           func(ctx context.Context) error
	WaitFn            func(ctx context.Context) (exec.ExitInfo, error)
	ShutdownFn        func(ctx context.Context) error
	TerminateFn       func(ctx context.Context) error
	RemoveFn          func(ctx context.Context) error
	AdoptFn           func() (bool, error)
	ContainerStatusFn func(ctx context.Context) (*typesv1.ContainerStatus, error)

	mu    sync.Mutex
	calls map[string]int
}

var (
	_ exec.Controller        = (*Controller)(nil)
	_ exec.ContainerStatuser = (*Controller)(nil)
)

func (c *Controller) called(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	c.calls[name]++
}

// Calls returns how many times the method name ("Prepare", "Start", …)
// was called.
func (c *Controller) Calls(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[name]
}

// Prepare implements exec.Controller.
func (c *Controller) Prepare(ctx context.Context) error {
	c.called("Prepare")
	if c.PrepareFn != nil {
		return c.PrepareFn(ctx)
	}
	return nil
}

// Start implements exec.Controller.
func (c *Controller) Start(ctx context.Context) error {
	c.called("Start")
	if c.StartFn != nil {
		return c.StartFn(ctx)
	}
	return nil
}

// Wait implements exec.Controller.
func (c *Controller) Wait(ctx context.Context) (exec.ExitInfo, error) {
	c.called("Wait")
	if c.WaitFn != nil {
		return c.WaitFn(ctx)
	}
	<-ctx.Done()
	return exec.ExitInfo{}, ctx.Err()
}

// Shutdown implements exec.Controller.
func (c *Controller) Shutdown(ctx context.Context) error {
	c.called("Shutdown")
	if c.ShutdownFn != nil {
		return c.ShutdownFn(ctx)
	}
	return nil
}

// Terminate implements exec.Controller.
func (c *Controller) Terminate(ctx context.Context) error {
	c.called("Terminate")
	if c.TerminateFn != nil {
		return c.TerminateFn(ctx)
	}
	return nil
}

// Remove implements exec.Controller.
func (c *Controller) Remove(ctx context.Context) error {
	c.called("Remove")
	if c.RemoveFn != nil {
		return c.RemoveFn(ctx)
	}
	return nil
}

// Adopt implements exec.Controller.
func (c *Controller) Adopt() (bool, error) {
	c.called("Adopt")
	if c.AdoptFn != nil {
		return c.AdoptFn()
	}
	return false, nil
}

// ContainerStatus implements exec.ContainerStatuser.
func (c *Controller) ContainerStatus(ctx context.Context) (*typesv1.ContainerStatus, error) {
	if c.ContainerStatusFn != nil {
		return c.ContainerStatusFn(ctx)
	}
	return nil, nil
}

// Executor is an exec.Executor that hands out one Controller per task ID,
// made by NewController (default: a Controller with no Fn set), and
// remembers them for the test to inspect.
type Executor struct {
	NewController func(t *typesv1.Task) (*Controller, error)
	// Tasks, when set, is what ListTasks returns: the tasks whose
	// containers "exist" on the node.
	Tasks func() []*typesv1.Task

	mu          sync.Mutex
	controllers map[string]*Controller
	made        map[string]int
}

var (
	_ exec.Executor   = (*Executor)(nil)
	_ exec.TaskLister = (*Executor)(nil)
)

// Controller implements exec.Executor.
func (e *Executor) Controller(t *typesv1.Task) (exec.Controller, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.controllers == nil {
		e.controllers, e.made = map[string]*Controller{}, map[string]int{}
	}
	e.made[t.Id]++
	if c, ok := e.controllers[t.Id]; ok {
		return c, nil
	}
	c := &Controller{}
	if e.NewController != nil {
		var err error
		if c, err = e.NewController(t); err != nil {
			return nil, err
		}
	}
	e.controllers[t.Id] = c
	return c, nil
}

// Get returns the controller made for the task ID, or nil.
func (e *Executor) Get(taskID string) *Controller {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.controllers[taskID]
}

// Made returns how many times a controller was asked for the task ID.
func (e *Executor) Made(taskID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.made[taskID]
}

// Describe implements exec.Executor.
func (e *Executor) Describe() *typesv1.NodeDescription {
	return &typesv1.NodeDescription{Hostname: "stub", Os: "linux", Architecture: "x86_64"}
}

// ListTasks implements exec.TaskLister.
func (e *Executor) ListTasks(context.Context) ([]*typesv1.Task, error) {
	if e.Tasks == nil {
		return nil, nil
	}
	return e.Tasks(), nil
}
