package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// The service convergence display follows docker/cli's
// service/progress package: an "overall progress" line, one line per slot
// (or node for global services) while there are at most 20, and a
// "verify" line that waits for the update monitor period before declaring
// the service converged.
const (
	maxProgress     = 9 // rank of RUNNING: a full bar
	maxProgressBars = 20
	// longestState is the width of the widest state word shown ("preparing").
	longestState = 9
	// defaultMonitor is how long tasks must stay running, as in Docker.
	defaultMonitor = 5 * time.Second
)

// progressOut shows progress lines keyed by an id ("overall progress",
// "1/5", "verify").
type progressOut interface {
	// update sets the line for id; current/total > 0 adds a bar.
	update(id, action string, current, total int)
}

// newProgressOut picks redrawn lines for terminals and plain, deduplicated
// lines for pipes and logs.
func (a *App) newProgressOut(quiet bool) progressOut {
	if quiet {
		return discardProgress{}
	}
	if a.StdoutIsTerminal() {
		return &termProgress{w: a.Stdout, index: map[string]int{}, bars: a.TerminalWidth() > 110}
	}
	return &plainProgress{w: a.Stdout, last: map[string]string{}}
}

type discardProgress struct{}

func (discardProgress) update(string, string, int, int) {}

// plainProgress prints a line when an id's text changes, so a log shows
// every step once.
type plainProgress struct {
	w    io.Writer
	last map[string]string
}

func (p *plainProgress) update(id, action string, _, _ int) {
	line := strings.TrimRight(id+": "+action, " ")
	if strings.TrimSpace(action) == "" || p.last[id] == line {
		return
	}
	p.last[id] = line
	fmt.Fprintln(p.w, line)
}

// termProgress keeps one screen line per id and rewrites it in place with
// ANSI cursor movement, as docker's jsonmessage display does.
type termProgress struct {
	w     io.Writer
	index map[string]int
	n     int
	bars  bool
}

func (p *termProgress) update(id, action string, current, total int) {
	text := id + ": " + action
	if p.bars && total > 0 {
		pct := current * 100 / total / 2
		if pct > 50 {
			pct = 50
		}
		text += " [" + strings.Repeat("=", pct) + ">" + strings.Repeat(" ", 50-pct) + "] "
	}
	i, ok := p.index[id]
	if !ok {
		p.index[id] = p.n
		p.n++
		fmt.Fprintf(p.w, "\x1b[2K%s\n", text)
		return
	}
	up := p.n - i
	fmt.Fprintf(p.w, "\x1b[%dA\r\x1b[2K%s\r\x1b[%dB", up, text, up)
}

// progressUpdater is one service mode's way of counting converged tasks.
type progressUpdater interface {
	update(svc *typesv1.Service, tasks []*typesv1.Task, activeNodes map[string]bool, rollback bool) (bool, error)
}

func writeOverallProgress(out progressOut, n, total int, rollback bool) {
	if rollback {
		out.update("overall progress", fmt.Sprintf("rolling back update: %d out of %d tasks", n, total), 0, 0)
		return
	}
	out.update("overall progress", fmt.Sprintf("%d out of %d tasks", n, total), 0, 0)
}

// truncProgressError keeps a task error on one line of at most 75 characters.
func truncProgressError(msg string) string {
	msg = strings.ReplaceAll(msg, "\n", " ")
	if len(msg) > 75 {
		msg = msg[:74] + "…"
	}
	return msg
}

func writeTaskProgress(out progressOut, id string, t *typesv1.Task) {
	if e := t.GetStatus().GetErr(); e != "" {
		out.update(id, truncProgressError(e), 0, 0)
		return
	}
	st := t.GetStatus().GetState()
	if !terminalState(t.GetDesiredState()) && !terminalState(st) {
		out.update(id, fmt.Sprintf("%-*s", longestState, taskStateWord(st)), stateRank[st], maxProgress)
	}
}

// betterTask picks, among tasks of one slot (or node), the one with the
// lowest desired state, then the lowest observed state: during a restart
// the old task is going away and the new one is what matters.
func betterTask(existing, t *typesv1.Task) bool {
	ed, td := stateRank[existing.GetDesiredState()], stateRank[t.GetDesiredState()]
	if ed < td {
		return false
	}
	if ed == td && stateRank[existing.GetStatus().GetState()] <= stateRank[t.GetStatus().GetState()] {
		return false
	}
	return true
}

func knownStates(t *typesv1.Task) bool {
	return stateRank[t.GetDesiredState()] != 0 && stateRank[t.GetStatus().GetState()] != 0
}

type replicatedProgress struct {
	out         progressOut
	slotMap     map[uint64]int
	initialized bool
	done        bool
}

func (u *replicatedProgress) update(svc *typesv1.Service, tasks []*typesv1.Task, active map[string]bool, rollback bool) (bool, error) {
	r := svc.GetSpec().GetReplicated()
	if r == nil {
		return false, errors.New("no replica count")
	}
	replicas := r.GetReplicas()
	if !u.initialized {
		u.slotMap = map[uint64]int{}
		writeOverallProgress(u.out, 0, int(replicas), rollback)
		if replicas <= maxProgressBars {
			for i := uint64(1); i <= replicas; i++ {
				u.out.update(fmt.Sprintf("%d/%d", i, replicas), " ", 0, 0)
			}
		}
		u.initialized = true
	}

	bySlot := map[uint64]*typesv1.Task{}
	var slots []uint64
	for _, t := range tasks {
		if !knownStates(t) {
			continue
		}
		if ex, ok := bySlot[t.GetSlot()]; ok && !betterTask(ex, t) {
			continue
		}
		if t.GetNodeId() != "" && !active[t.GetNodeId()] {
			continue
		}
		if _, ok := bySlot[t.GetSlot()]; !ok {
			slots = append(slots, t.GetSlot())
		}
		bySlot[t.GetSlot()] = t
	}
	if u.done {
		for _, t := range bySlot {
			if t.GetStatus().GetState() != typesv1.TaskState_TASK_STATE_RUNNING {
				u.done = false
				break
			}
		}
	}
	// Slots map to bars in order, so "1/5" is the lowest slot.
	sort.Slice(slots, func(i, j int) bool { return slots[i] < slots[j] })
	running := uint64(0)
	for _, slot := range slots {
		t := bySlot[slot]
		mapped := u.slotMap[slot]
		if mapped == 0 {
			mapped = len(u.slotMap) + 1
			u.slotMap[slot] = mapped
		}
		if !terminalState(t.GetDesiredState()) && t.GetStatus().GetState() == typesv1.TaskState_TASK_STATE_RUNNING {
			running++
		}
		if !u.done && replicas <= maxProgressBars && uint64(mapped) <= replicas {
			writeTaskProgress(u.out, fmt.Sprintf("%d/%d", mapped, replicas), t)
		}
	}
	if !u.done {
		writeOverallProgress(u.out, int(running), int(replicas), rollback)
		if running == replicas {
			u.done = true
		}
	}
	return running == replicas, nil
}

type globalProgress struct {
	out         progressOut
	initialized bool
	done        bool
}

func (u *globalProgress) update(_ *typesv1.Service, tasks []*typesv1.Task, active map[string]bool, rollback bool) (bool, error) {
	byNode := map[string]*typesv1.Task{}
	var order []string
	for _, t := range tasks {
		if !knownStates(t) {
			continue
		}
		if ex, ok := byNode[t.GetNodeId()]; ok && !betterTask(ex, t) {
			continue
		}
		if _, ok := byNode[t.GetNodeId()]; !ok {
			order = append(order, t.GetNodeId())
		}
		byNode[t.GetNodeId()] = t
	}
	nodeCount := len(byNode)
	if !u.initialized {
		if nodeCount == 0 {
			// The orchestrator has not made the tasks yet, or no node fits.
			u.out.update("overall progress", "waiting for new tasks", 0, 0)
			return false, nil
		}
		writeOverallProgress(u.out, 0, nodeCount, rollback)
		u.initialized = true
	}
	if u.done {
		for _, t := range byNode {
			if t.GetStatus().GetState() != typesv1.TaskState_TASK_STATE_RUNNING {
				u.done = false
				break
			}
		}
	}
	running := 0
	for _, id := range order {
		t := byNode[id]
		if !active[id] {
			continue
		}
		if !terminalState(t.GetDesiredState()) && t.GetStatus().GetState() == typesv1.TaskState_TASK_STATE_RUNNING {
			running++
		}
		if !u.done && nodeCount <= maxProgressBars {
			writeTaskProgress(u.out, truncateID(id), t)
		}
	}
	if !u.done {
		writeOverallProgress(u.out, running, nodeCount, rollback)
		if running == nodeCount {
			u.done = true
		}
	}
	return running == nodeCount, nil
}

// waitOnService shows a service's convergence until its tasks have been
// running for the monitor period. Interrupting stops the wait, not the
// deployment.
func (a *App) waitOnService(ctx context.Context, serviceID string, quiet bool) error {
	c, err := a.control()
	if err != nil {
		return err
	}
	out := a.newProgressOut(quiet)
	var (
		updater     progressUpdater
		converged   bool
		convergedAt time.Time
		rollback    bool
		message     string
	)
	interrupted := func() error {
		if !converged {
			fmt.Fprintln(a.Stdout, "Operation continuing in background.")
			fmt.Fprintf(a.Stdout, "Use `shoal service ps %s` to check progress.\n", serviceID)
		}
		return nil
	}
	for {
		if ctx.Err() != nil {
			return interrupted()
		}
		resp, err := c.GetService(ctx, &controlv1.GetServiceRequest{Ref: serviceID})
		if err != nil {
			if ctx.Err() != nil {
				return interrupted()
			}
			return notFoundAs(err, "service", serviceID)
		}
		svc := resp.GetService()
		monitor := defaultMonitor
		if m := svc.GetSpec().GetUpdate().GetMonitor(); m != nil && m.AsDuration() > 0 {
			monitor = m.AsDuration()
		}
		if updater == nil {
			switch svc.GetSpec().GetMode().(type) {
			case *typesv1.ServiceSpec_Global:
				updater = &globalProgress{out: out}
			case *typesv1.ServiceSpec_Replicated:
				updater = &replicatedProgress{out: out}
			default:
				return errors.New("unrecognized service mode")
			}
		}
		if us := svc.GetUpdateStatus(); us != nil {
			switch us.GetState() {
			case typesv1.UpdateStatus_STATE_UPDATING:
				rollback = false
			case typesv1.UpdateStatus_STATE_COMPLETED:
				if !converged {
					return nil
				}
			case typesv1.UpdateStatus_STATE_PAUSED:
				return fmt.Errorf("service update paused: %s", us.GetMessage())
			case typesv1.UpdateStatus_STATE_ROLLBACK_STARTED:
				if !rollback && us.GetMessage() != "" {
					out.update("rollback", us.GetMessage(), 0, 0)
				}
				rollback = true
			case typesv1.UpdateStatus_STATE_ROLLBACK_PAUSED:
				return fmt.Errorf("service rollback paused: %s", us.GetMessage())
			case typesv1.UpdateStatus_STATE_ROLLBACK_COMPLETED:
				if !converged {
					message = us.GetMessage()
				}
				rollback = true
			}
		}
		if converged && a.Now().Sub(convergedAt) >= monitor {
			out.update("verify", fmt.Sprintf("Service %s converged", serviceID), 0, 0)
			if message != "" {
				out.update("rollback", message, 0, 0)
			}
			return nil
		}

		tresp, err := c.ListTasks(ctx, &controlv1.ListTasksRequest{ServiceIds: []string{svc.GetId()}})
		if err != nil {
			if ctx.Err() != nil {
				return interrupted()
			}
			return err
		}
		active, err := a.activeNodes(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted()
			}
			return err
		}
		converged, err = updater.update(svc, upToDate(svc, tresp.GetTasks()), active, rollback)
		if err != nil {
			return err
		}
		if converged {
			if convergedAt.IsZero() {
				convergedAt = a.Now()
			}
			if wait := monitor - a.Now().Sub(convergedAt); wait >= 0 {
				// Whole seconds left, rounded up: "5" right at convergence.
				secs := int64((wait + time.Second - 1) / time.Second)
				if secs < 1 {
					secs = 1
				}
				out.update("verify", fmt.Sprintf("Waiting %d seconds to verify that tasks are stable...", secs), 0, 0)
			}
		} else {
			if !convergedAt.IsZero() {
				out.update("verify", "Detected task failure", 0, 0)
			}
			convergedAt = time.Time{}
		}
		if err := a.Sleep(ctx, a.PollInterval); err != nil {
			return interrupted()
		}
	}
}

// upToDate keeps the tasks that run the service's current spec (docker's
// "_up-to-date" filter); tasks that do not record a spec version count.
func upToDate(svc *typesv1.Service, tasks []*typesv1.Task) []*typesv1.Task {
	want := svc.GetSpecVersion()
	if want == 0 {
		return tasks
	}
	out := tasks[:0:0]
	for _, t := range tasks {
		if t.GetSpecVersion() == 0 || t.GetSpecVersion() >= want {
			out = append(out, t)
		}
	}
	return out
}

// activeNodes are the nodes not known to be down: a task on a down node
// will be replaced and must not count.
func (a *App) activeNodes(ctx context.Context) (map[string]bool, error) {
	c, err := a.control()
	if err != nil {
		return nil, err
	}
	resp, err := c.ListNodes(ctx, &controlv1.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range resp.GetNodes() {
		if n.GetStatus().GetState() != typesv1.NodeState_NODE_STATE_DOWN {
			out[n.GetId()] = true
		}
	}
	return out, nil
}
