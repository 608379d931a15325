package cli

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

const defaultTaskTableFormat = "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}"

// maxErrLength is how much of a task error `service ps` shows without --no-trunc.
const maxErrLength = 30

var taskHeader = map[string]string{
	"ID":           "ID",
	"Name":         "NAME",
	"Image":        "IMAGE",
	"Node":         "NODE",
	"DesiredState": "DESIRED STATE",
	"CurrentState": "CURRENT STATE",
	"Error":        "ERROR",
	"Ports":        "PORTS",
}

// taskRow is one `service ps` line; its methods are the --format fields.
type taskRow struct {
	t     *typesv1.Task
	name  string
	node  string
	trunc bool
	now   time.Time
}

func (r *taskRow) MarshalJSON() ([]byte, error) { return marshalRow(r) }

// ID is the task id, 12 characters unless --no-trunc.
func (r *taskRow) ID() string {
	if r.trunc {
		return truncateID(r.t.GetId())
	}
	return r.t.GetId()
}

// Name is service.slot (service.nodeid for global services), indented
// with ` \_ ` for older tasks of the same slot in tables.
func (r *taskRow) Name() string { return r.name }

// Image is the task's image; without --no-trunc a digest is dropped.
func (r *taskRow) Image() string {
	image := r.t.GetSpec().GetContainer().GetImage()
	if r.trunc {
		return familiarImage(image)
	}
	return image
}

// Node is the hostname of the node the task was scheduled on.
func (r *taskRow) Node() string { return r.node }

// DesiredState is Running, Shutdown, …
func (r *taskRow) DesiredState() string { return capitalizeFirst(taskStateWord(r.t.GetDesiredState())) }

// CurrentState is the observed state and its age: "Running 5 seconds ago".
func (r *taskRow) CurrentState() string {
	var age time.Duration
	if ts := r.t.GetStatus().GetTimestamp(); ts != nil {
		age = r.now.Sub(ts.AsTime())
	}
	return fmt.Sprintf("%s %s ago", capitalizeFirst(taskStateWord(r.t.GetStatus().GetState())), strings.ToLower(humanDuration(age)))
}

// Error is the task's error, quoted, and cut short unless --no-trunc.
func (r *taskRow) Error() string {
	e := r.t.GetStatus().GetErr()
	if r.trunc {
		e = ellipsis(e, maxErrLength)
	}
	if e != "" {
		e = `"` + e + `"`
	}
	return e
}

// Ports are the task's host-published ports.
func (r *taskRow) Ports() string {
	ps := r.t.GetStatus().GetPortStatus()
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, fmt.Sprintf("*:%d->%d/%s", p.GetPublishedPort(), p.GetTargetPort(), protocolWord(p.GetProtocol())))
	}
	return strings.Join(out, ",")
}

// taskListOptions are the flags shared by `service ps` and `stack ps`.
type taskListOptions struct {
	quiet     bool
	noTrunc   bool
	noResolve bool
	format    string
	filters   []string
}

func addTaskListFlags(cmd *cobra.Command, o *taskListOptions) {
	f := cmd.Flags()
	f.BoolVarP(&o.quiet, "quiet", "q", false, "Only display task IDs")
	f.BoolVar(&o.noTrunc, "no-trunc", false, "Do not truncate output")
	f.BoolVar(&o.noResolve, "no-resolve", false, "Do not map IDs to Names")
	f.StringVar(&o.format, "format", "", formatHelp)
	f.StringArrayVarP(&o.filters, "filter", "f", nil, "Filter output based on conditions provided (desired-state, id, name, node)")
}

// applyTaskFilters turns -f key=value flags into the request's filters.
func (a *App) applyTaskFilters(ctx context.Context, req *controlv1.ListTasksRequest, filters []string) error {
	for _, f := range filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("bad format of filter (expected name=value)")
		}
		switch strings.ToLower(k) {
		case "desired-state":
			st, ok := typesv1.TaskState_value["TASK_STATE_"+strings.ToUpper(v)]
			if !ok {
				return fmt.Errorf("invalid desired-state filter %q: want running, shutdown, accepted, …", v)
			}
			req.DesiredStates = append(req.DesiredStates, typesv1.TaskState(st))
		case "id":
			req.Ids = append(req.Ids, v)
		case "name":
			req.Names = append(req.Names, v)
		case "node":
			n, err := a.getNode(ctx, v)
			if err != nil {
				return err
			}
			req.NodeIds = append(req.NodeIds, n.GetId())
		default:
			return fmt.Errorf("invalid filter '%s'", k)
		}
	}
	return nil
}

func (a *App) newServicePsCommand() *cobra.Command {
	var o taskListOptions
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS] SERVICE [SERVICE...]",
		Short: "List the tasks of one or more services",
		Args:  requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			req := &controlv1.ListTasksRequest{}
			var notFound []error
			for _, ref := range args {
				s, err := a.getService(ctx, ref)
				if err != nil {
					if !isNotFound(err) {
						return err
					}
					notFound = append(notFound, err)
					continue
				}
				req.ServiceIds = append(req.ServiceIds, s.GetId())
			}
			if len(req.ServiceIds) == 0 {
				return joinErrors(notFound)
			}
			if err := a.applyTaskFilters(ctx, req, o.filters); err != nil {
				return err
			}
			c, err := a.control()
			if err != nil {
				return err
			}
			resp, err := c.ListTasks(ctx, req)
			if err != nil {
				return err
			}
			if err := a.printTasks(ctx, resp.GetTasks(), o); err != nil {
				return err
			}
			return joinErrors(notFound)
		},
	}
	addTaskListFlags(cmd, &o)
	return cmd
}

// printTasks prints tasks as docker's task.Print: grouped by slot, newest
// first within a slot, older ones indented with ` \_ `.
func (a *App) printTasks(ctx context.Context, tasks []*typesv1.Task, o taskListOptions) error {
	if o.quiet {
		o.noTrunc = true // -q prints full ids, as docker does
	}
	f := chooseFormat(o.format, o.quiet, defaultTaskTableFormat,
		`id: {{.ID}}\nname: {{.Name}}\nimage: {{.Image}}\nnode: {{.Node}}\ndesired_state: {{.DesiredState}}\ncurrent_state: {{.CurrentState}}\nerror: {{.Error}}\nports: {{.Ports}}\n`,
		`id: {{.ID}}`)

	svcNames, nodeNames, err := a.resolveTaskNames(ctx, tasks, o.noResolve || o.quiet)
	if err != nil {
		return err
	}
	names := make(map[*typesv1.Task]string, len(tasks))
	for _, t := range tasks {
		svc := svcNames[t.GetServiceId()]
		if svc == "" {
			svc = t.GetServiceId()
		}
		if t.GetSlot() != 0 {
			names[t] = svc + "." + strconv.FormatUint(t.GetSlot(), 10)
		} else {
			names[t] = svc + "." + t.GetNodeId()
		}
	}
	sorted := append([]*typesv1.Task(nil), tasks...)
	sort.SliceStable(sorted, func(i, j int) bool {
		ni, nj := names[sorted[i]], names[sorted[j]]
		if ni != nj {
			return naturalLess(ni, nj)
		}
		return sorted[j].GetMeta().GetCreatedAt().AsTime().Before(sorted[i].GetMeta().GetCreatedAt().AsTime())
	})

	indent := ""
	if f.isTable() {
		indent = ` \_ `
	}
	now := a.Now()
	rows := make([]any, 0, len(sorted))
	prev := ""
	for _, t := range sorted {
		name := names[t]
		shown := name
		if name == prev {
			shown = indent + name
		}
		prev = name
		node := nodeNames[t.GetNodeId()]
		if node == "" {
			node = t.GetNodeId()
		}
		rows = append(rows, &taskRow{t: t, name: shown, node: node, trunc: !o.noTrunc, now: now})
	}
	return writeList(a.Stdout, f, taskHeader, rows)
}

// resolveTaskNames maps service ids to names and node ids to hostnames,
// asking the manager only for what the tasks do not carry themselves.
func (a *App) resolveTaskNames(ctx context.Context, tasks []*typesv1.Task, noResolve bool) (svc, node map[string]string, err error) {
	svc, node = map[string]string{}, map[string]string{}
	if noResolve {
		return svc, node, nil
	}
	var missing []string
	needNodes := false
	for _, t := range tasks {
		if n := t.GetServiceAnnotations().GetName(); n != "" {
			svc[t.GetServiceId()] = n
		}
		if t.GetNodeId() != "" {
			needNodes = true
		}
	}
	for _, t := range tasks {
		if _, ok := svc[t.GetServiceId()]; !ok && t.GetServiceId() != "" {
			missing = append(missing, t.GetServiceId())
			svc[t.GetServiceId()] = ""
		}
	}
	c, err := a.control()
	if err != nil {
		return nil, nil, err
	}
	if len(missing) > 0 {
		resp, err := c.ListServices(ctx, &controlv1.ListServicesRequest{Ids: missing})
		if err != nil {
			return nil, nil, err
		}
		for _, s := range resp.GetServices() {
			svc[s.GetId()] = serviceName(s)
		}
	}
	if needNodes {
		nodes, err := a.nodeNames(ctx)
		if err != nil {
			return nil, nil, err
		}
		node = nodes
	}
	return svc, node, nil
}

func (a *App) nodeNames(ctx context.Context) (map[string]string, error) {
	c, err := a.control()
	if err != nil {
		return nil, err
	}
	resp, err := c.ListNodes(ctx, &controlv1.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(resp.GetNodes()))
	for _, n := range resp.GetNodes() {
		out[n.GetId()] = n.GetDescription().GetHostname()
	}
	return out, nil
}
