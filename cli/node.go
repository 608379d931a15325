package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func (a *App) newNodeCommand() *cobra.Command {
	return newGroup("node", "Manage Swarm nodes",
		a.newNodeListCommand(),
		a.newNodeInspectCommand(),
		a.newNodeUpdateCommand(),
		a.newNodeRemoveCommand(),
		a.newNodeRoleCommand("promote", typesv1.NodeRole_NODE_ROLE_MANAGER),
		a.newNodeRoleCommand("demote", typesv1.NodeRole_NODE_ROLE_WORKER),
	)
}

const defaultNodeTableFormat = "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}"

var nodeHeader = map[string]string{
	"ID":            "ID",
	"Self":          "",
	"Hostname":      "HOSTNAME",
	"Status":        "STATUS",
	"Availability":  "AVAILABILITY",
	"ManagerStatus": "MANAGER STATUS",
	"EngineVersion": "ENGINE VERSION",
	"TLSStatus":     "TLS STATUS",
}

// nodeRow is one `node ls` line; its methods are the --format fields.
type nodeRow struct {
	n    *typesv1.Node
	self string
}

func (r *nodeRow) MarshalJSON() ([]byte, error) { return marshalRow(r) }

// ID is the full node id (node ls does not truncate, as in Docker).
func (r *nodeRow) ID() string { return r.n.GetId() }

// Self is true for the node the CLI talks to.
func (r *nodeRow) Self() bool { return r.self != "" && r.n.GetId() == r.self }

// Hostname is the node's hostname.
func (r *nodeRow) Hostname() string { return r.n.GetDescription().GetHostname() }

// Status is Ready, Down, Disconnected or Unknown.
func (r *nodeRow) Status() string {
	return capitalizeFirst(nodeStateWord(r.n.GetStatus().GetState()))
}

// Availability is Active, Pause or Drain.
func (r *nodeRow) Availability() string {
	return capitalizeFirst(availabilityWord(r.n.GetSpec().GetAvailability()))
}

// ManagerStatus is Leader, Reachable, Unreachable or empty for workers.
func (r *nodeRow) ManagerStatus() string {
	ms := r.n.GetManagerStatus()
	if ms == nil {
		return ""
	}
	if ms.GetLeader() {
		return "Leader"
	}
	return capitalizeFirst(reachabilityWord(ms.GetReachability()))
}

// EngineVersion is the shoal version the node runs.
func (r *nodeRow) EngineVersion() string { return r.n.GetDescription().GetVersion() }

// TLSStatus is not tracked yet.
func (r *nodeRow) TLSStatus() string { return "Unknown" }

func (a *App) newNodeListCommand() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List nodes in the swarm",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.control()
			if err != nil {
				return err
			}
			resp, err := c.ListNodes(ctx, &controlv1.ListNodesRequest{})
			if err != nil {
				return err
			}
			nodes := resp.GetNodes()
			var self string
			if len(nodes) > 0 && !quiet {
				info, err := c.Info(ctx, &controlv1.InfoRequest{})
				if err != nil {
					return err
				}
				self = info.GetNodeId()
			}
			sort.SliceStable(nodes, func(i, j int) bool {
				return naturalLess(nodes[i].GetDescription().GetHostname(), nodes[j].GetDescription().GetHostname())
			})
			rows := make([]any, len(nodes))
			for i, n := range nodes {
				rows[i] = &nodeRow{n: n, self: self}
			}
			f := chooseFormat(format, quiet, defaultNodeTableFormat,
				`node_id: {{.ID}}\nhostname: {{.Hostname}}\nstatus: {{.Status}}\navailability: {{.Availability}}\nmanager_status: {{.ManagerStatus}}\n`,
				`node_id: {{.ID}}`)
			return writeList(a.Stdout, f, nodeHeader, rows)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only display IDs")
	cmd.Flags().StringVar(&format, "format", "", formatHelp)
	return cmd
}

// formatHelp is docker's --format help text.
const formatHelp = `Format output using a custom template:
'table':            Print output in table format with column headers (default)
'table TEMPLATE':   Print output in table format using the given Go template
'json':             Print in JSON format
'TEMPLATE':         Print output using the given Go template.
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates`

const inspectFormatHelp = `Format output using a custom template:
'json':             Print in JSON format
'TEMPLATE':         Print output using the given Go template.
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates`

func (a *App) getNode(ctx context.Context, ref string) (*typesv1.Node, error) {
	c, err := a.control()
	if err != nil {
		return nil, err
	}
	resp, err := c.GetNode(ctx, &controlv1.GetNodeRequest{Ref: ref})
	if err != nil {
		return nil, notFoundAs(err, "node", ref)
	}
	return resp.GetNode(), nil
}

func (a *App) newNodeInspectCommand() *cobra.Command {
	var (
		format string
		pretty bool
	)
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] self|NODE [NODE...]",
		Short: "Display detailed information on one or more nodes",
		Args:  requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pretty && format != "" {
				return errors.New("--format is incompatible with human friendly format")
			}
			get := func(ref string) (proto.Message, error) { return a.getNode(cmd.Context(), ref) }
			if pretty {
				return a.inspectPretty(args, get, nodePrettyTemplate, func(m proto.Message) any {
					return &nodePretty{n: m.(*typesv1.Node)}
				})
			}
			return a.inspect(args, format, get)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", inspectFormatHelp)
	cmd.Flags().BoolVar(&pretty, "pretty", false, "Print the information in a human friendly format")
	return cmd
}

const nodePrettyTemplate = `ID:			{{.ID}}
{{- if .Name }}
Name:			{{.Name}}
{{- end }}
{{- if .Labels }}
Labels:
{{- range $k, $v := .Labels }}
 - {{ $k }}{{if $v }}={{ $v }}{{ end }}
{{- end }}{{ end }}
Hostname:              	{{.Hostname}}
Joined at:             	{{.CreatedAt}}
Status:
 State:			{{.StatusState}}
 {{- if .StatusMessage}}
 Message:              	{{.StatusMessage}}
 {{- end}}
 Availability:         	{{.Availability}}
 {{- if .StatusAddr}}
 Address:		{{.StatusAddr}}
 {{- end}}
{{- if .IsManager}}
Manager Status:
 Address:		{{.ManagerAddr}}
 Raft Status:		{{.Reachability}}
 {{- if .IsLeader}}
 Leader:		Yes
 {{- else}}
 Leader:		No
 {{- end}}
{{- end}}
Platform:
 Operating System:	{{.OS}}
 Architecture:		{{.Architecture}}
Resources:
 CPUs:			{{.CPUs}}
 Memory:		{{.Memory}}
Engine Version:		{{.EngineVersion}}
`

// nodePretty feeds nodePrettyTemplate.
type nodePretty struct{ n *typesv1.Node }

func (p *nodePretty) ID() string                { return p.n.GetId() }
func (p *nodePretty) Name() string              { return p.n.GetSpec().GetAnnotations().GetName() }
func (p *nodePretty) Labels() map[string]string { return p.n.GetSpec().GetAnnotations().GetLabels() }
func (p *nodePretty) Hostname() string          { return p.n.GetDescription().GetHostname() }
func (p *nodePretty) CreatedAt() string         { return prettyTime(p.n.GetMeta().GetCreatedAt()) }
func (p *nodePretty) StatusState() string {
	return capitalizeFirst(nodeStateWord(p.n.GetStatus().GetState()))
}
func (p *nodePretty) StatusMessage() string { return p.n.GetStatus().GetMessage() }
func (p *nodePretty) Availability() string {
	return capitalizeFirst(availabilityWord(p.n.GetSpec().GetAvailability()))
}
func (p *nodePretty) StatusAddr() string  { return p.n.GetStatus().GetAddr() }
func (p *nodePretty) IsManager() bool     { return p.n.GetManagerStatus() != nil }
func (p *nodePretty) ManagerAddr() string { return p.n.GetManagerStatus().GetAddr() }
func (p *nodePretty) Reachability() string {
	return capitalizeFirst(reachabilityWord(p.n.GetManagerStatus().GetReachability()))
}
func (p *nodePretty) IsLeader() bool       { return p.n.GetManagerStatus().GetLeader() }
func (p *nodePretty) OS() string           { return p.n.GetDescription().GetOs() }
func (p *nodePretty) Architecture() string { return p.n.GetDescription().GetArchitecture() }
func (p *nodePretty) CPUs() int64 {
	return p.n.GetDescription().GetResources().GetNanoCpus() / 1e9
}
func (p *nodePretty) Memory() string {
	return humanBinarySize(float64(p.n.GetDescription().GetResources().GetMemoryBytes()))
}
func (p *nodePretty) EngineVersion() string { return p.n.GetDescription().GetVersion() }

// humanBinarySize is go-units' BytesSize ("1.944GiB"), used for memory.
func humanBinarySize(size float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"}
	i := 0
	for size >= 1024 && i < len(units)-1 {
		size /= 1024
		i++
	}
	return fmt.Sprintf("%.4g%s", size, units[i])
}

func parseAvailability(s string) (typesv1.NodeAvailability, error) {
	switch strings.ToLower(s) {
	case "active":
		return typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE, nil
	case "pause":
		return typesv1.NodeAvailability_NODE_AVAILABILITY_PAUSE, nil
	case "drain":
		return typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN, nil
	}
	return 0, fmt.Errorf("invalid availability %q, only active, pause and drain are supported", s)
}

func parseRole(s string) (typesv1.NodeRole, error) {
	switch strings.ToLower(s) {
	case "worker":
		return typesv1.NodeRole_NODE_ROLE_WORKER, nil
	case "manager":
		return typesv1.NodeRole_NODE_ROLE_MANAGER, nil
	}
	return 0, fmt.Errorf("invalid role %q, only worker and manager are supported", s)
}

// updateNode reads the node, lets change edit a copy of its spec and writes
// it back with the version read, so a concurrent change is refused rather
// than overwritten. A node's version also moves with its status
// (heartbeats, sessions); when only that changed meanwhile, the edit is
// made again on the fresh copy.
func (a *App) updateNode(ctx context.Context, ref string, change func(*typesv1.NodeSpec) error) error {
	var first *typesv1.NodeSpec
	for attempt := 0; ; attempt++ {
		n, err := a.getNode(ctx, ref)
		if err != nil {
			return err
		}
		if first == nil {
			first = n.GetSpec()
		} else if !proto.Equal(first, n.GetSpec()) {
			return fmt.Errorf("node %s was changed by someone else meanwhile; try again", ref)
		}
		spec := proto.Clone(n.GetSpec()).(*typesv1.NodeSpec)
		if spec == nil {
			spec = &typesv1.NodeSpec{}
		}
		if err := change(spec); err != nil {
			return err
		}
		c, err := a.control()
		if err != nil {
			return err
		}
		_, err = c.UpdateNode(ctx, &controlv1.UpdateNodeRequest{NodeId: n.GetId(), Version: n.GetMeta().GetVersion(), Spec: spec})
		if err != nil && attempt < 10 && strings.Contains(err.Error(), "out of sequence") {
			continue
		}
		return notFoundAs(err, "node", ref)
	}
}

func (a *App) newNodeUpdateCommand() *cobra.Command {
	var (
		availability string
		role         string
		labelAdd     []string
		labelRm      []string
	)
	cmd := &cobra.Command{
		Use:   "update [OPTIONS] NODE",
		Short: "Update a node",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			flags := cmd.Flags()
			var avail typesv1.NodeAvailability
			if flags.Changed("availability") {
				v, err := parseAvailability(availability)
				if err != nil {
					return err
				}
				avail = v
			}
			var newRole typesv1.NodeRole
			if flags.Changed("role") {
				v, err := parseRole(role)
				if err != nil {
					return err
				}
				newRole = v
			}
			err := a.updateNode(cmd.Context(), args[0], func(spec *typesv1.NodeSpec) error {
				if flags.Changed("availability") {
					spec.Availability = avail
				}
				if flags.Changed("role") {
					spec.DesiredRole = newRole
				}
				if spec.Annotations == nil {
					spec.Annotations = &typesv1.Annotations{}
				}
				if len(labelAdd) > 0 && spec.Annotations.Labels == nil {
					spec.Annotations.Labels = map[string]string{}
				}
				for _, kv := range labelAdd {
					k, v, _ := strings.Cut(kv, "=")
					spec.Annotations.Labels[k] = v
				}
				for _, k := range labelRm {
					if _, ok := spec.Annotations.Labels[k]; !ok {
						return fmt.Errorf("key %s doesn't exist in node's labels", k)
					}
					delete(spec.Annotations.Labels, k)
				}
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, args[0])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&availability, "availability", "", `Availability of the node ("active", "pause", "drain")`)
	f.StringVar(&role, "role", "", `Role of the node ("worker", "manager")`)
	f.StringArrayVar(&labelAdd, "label-add", nil, "Add or update a node label (\"key=value\")")
	f.StringArrayVar(&labelRm, "label-rm", nil, "Remove a node label if exists")
	return cmd
}

func (a *App) newNodeRoleCommand(verb string, role typesv1.NodeRole) *cobra.Command {
	short := "Promote one or more nodes to manager in the swarm"
	if verb == "demote" {
		short = "Demote one or more nodes from manager in the swarm"
	}
	return &cobra.Command{
		Use:   verb + " NODE [NODE...]",
		Short: short,
		Args:  requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, ref := range args {
				already := false
				err := a.updateNode(cmd.Context(), ref, func(spec *typesv1.NodeSpec) error {
					if spec.DesiredRole == role {
						already = true
					}
					spec.DesiredRole = role
					return nil
				})
				switch {
				case err != nil:
					errs = append(errs, err)
				case verb == "promote" && already:
					fmt.Fprintf(a.Stdout, "Node %s is already a manager.\n", ref)
				case verb == "promote":
					fmt.Fprintf(a.Stdout, "Node %s promoted to a manager in the swarm.\n", ref)
				case already:
					fmt.Fprintf(a.Stdout, "Node %s is already a worker.\n", ref)
				default:
					fmt.Fprintf(a.Stdout, "Manager %s demoted in the swarm.\n", ref)
				}
			}
			return joinErrors(errs)
		},
	}
}

func (a *App) newNodeRemoveCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] NODE [NODE...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more nodes from the swarm",
		Args:    requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.control()
			if err != nil {
				return err
			}
			var errs []error
			for _, ref := range args {
				if _, err := c.RemoveNode(cmd.Context(), &controlv1.RemoveNodeRequest{Ref: ref, Force: force}); err != nil {
					errs = append(errs, notFoundAs(err, "node", ref))
					continue
				}
				fmt.Fprintln(a.Stdout, ref)
			}
			return joinErrors(errs)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force remove a node from the swarm")
	return cmd
}
