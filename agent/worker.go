package agent

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/agent/exec"
	dispatcherv1 "github.com/shoal-dev/shoal/proto/dispatcher/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// worker keeps one taskRunner per task assigned to the node. It lives as
// long as Run, across sessions: a session that drops and comes back sends
// the same tasks again, which reach the runners that already run them, so
// nothing is restarted.
type worker struct {
	ctx  context.Context
	exec exec.Executor
	rep  *reporter
	log  *slog.Logger

	mu    sync.Mutex
	tasks map[string]*taskRunner
	wg    sync.WaitGroup
}

func newWorker(ctx context.Context, e exec.Executor, rep *reporter, log *slog.Logger) *worker {
	return &worker{ctx: ctx, exec: e, rep: rep, log: log, tasks: map[string]*taskRunner{}}
}

// apply takes one assignments message: a complete set replaces the tasks
// the worker knows, an incremental one changes them.
func (w *worker) apply(m *dispatcherv1.AssignmentsMessage) {
	complete := m.GetType() == dispatcherv1.AssignmentsMessage_TYPE_COMPLETE
	seen := map[string]bool{}
	for _, ch := range m.GetChanges() {
		t := ch.GetTask()
		if t == nil {
			continue // secrets and configs: not used by this agent yet
		}
		switch ch.GetAction() {
		case dispatcherv1.AssignmentChange_ACTION_UPDATE:
			seen[t.Id] = true
			w.update(t, complete)
		case dispatcherv1.AssignmentChange_ACTION_REMOVE:
			w.remove(t.Id)
		}
	}
	if !complete {
		return
	}
	w.mu.Lock()
	var gone []string
	for id := range w.tasks {
		if !seen[id] {
			gone = append(gone, id)
		}
	}
	w.mu.Unlock()
	for _, id := range gone {
		w.remove(id)
	}
	w.sweep()
}

// update starts a runner for a new task or hands the new version of a
// known one to its runner. On a complete set, which begins every session,
// a status the manager missed (it shows an older state than the runner's
// last) is queued again: the call that carried it may have failed with
// the previous session.
func (w *worker) update(t *typesv1.Task, complete bool) {
	w.mu.Lock()
	r, ok := w.tasks[t.Id]
	if !ok {
		r = newTaskRunner(w, t, false)
		w.tasks[t.Id] = r
		w.wg.Add(1)
		w.mu.Unlock()
		go r.run(w.ctx)
		return
	}
	w.mu.Unlock()
	last := r.update(t)
	if complete && last != nil && t.GetStatus().GetState() < last.State && !w.rep.isPending(t.Id) {
		w.rep.report(t.Id, last)
	}
}

func (w *worker) remove(id string) {
	w.mu.Lock()
	r := w.tasks[id]
	w.mu.Unlock()
	if r != nil {
		r.remove()
	}
}

// sweep removes the containers of tasks the executor knows but the
// worker does not: tasks that were unassigned while the agent was away.
func (w *worker) sweep() {
	l, ok := w.exec.(exec.TaskLister)
	if !ok {
		return
	}
	tasks, err := l.ListTasks(w.ctx)
	if err != nil {
		w.log.Warn("list task containers", "err", err)
		return
	}
	for _, t := range tasks {
		w.mu.Lock()
		if _, ok := w.tasks[t.Id]; ok {
			w.mu.Unlock()
			continue
		}
		w.log.Info("removing container of unassigned task", "task.id", t.Id, "task.name", t.GetAnnotations().GetName())
		r := newTaskRunner(w, t, true)
		w.tasks[t.Id] = r
		w.wg.Add(1)
		w.mu.Unlock()
		go r.run(w.ctx)
	}
}

// forget drops a runner that has finished with its task.
func (w *worker) forget(r *taskRunner) {
	w.mu.Lock()
	if w.tasks[r.id] == r {
		delete(w.tasks, r.id)
	}
	w.mu.Unlock()
}

// wait returns when every runner has returned (after the worker's
// context ended, or their tasks were removed).
func (w *worker) wait() { w.wg.Wait() }

func cloneStatus(s *typesv1.TaskStatus) *typesv1.TaskStatus {
	if s == nil {
		return &typesv1.TaskStatus{}
	}
	return proto.Clone(s).(*typesv1.TaskStatus)
}
