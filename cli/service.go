package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func (a *App) newServiceCommand() *cobra.Command {
	return newGroup("service", "Manage Swarm services",
		a.newServiceListCommand(),
		a.newServicePsCommand(),
		a.newServiceInspectCommand(),
		a.newServiceLogsCommand(),
		a.newServiceScaleCommand(),
		a.newServiceRemoveCommand(),
	)
}

const defaultServiceTableFormat = "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}"

var serviceHeader = map[string]string{
	"ID":       "ID",
	"Name":     "NAME",
	"Mode":     "MODE",
	"Replicas": "REPLICAS",
	"Image":    "IMAGE",
	"Ports":    "PORTS",
}

// serviceRow is one `service ls` line; its methods are the --format fields.
type serviceRow struct {
	s  *typesv1.Service
	st *controlv1.ServiceStatus
}

func (r *serviceRow) MarshalJSON() ([]byte, error) { return marshalRow(r) }

// ID is the service id, truncated to 12 characters as in Docker.
func (r *serviceRow) ID() string { return truncateID(r.s.GetId()) }

// Name is the service's full name (stack_service).
func (r *serviceRow) Name() string { return serviceName(r.s) }

// Mode is "replicated" or "global".
func (r *serviceRow) Mode() string {
	switch r.s.GetSpec().GetMode().(type) {
	case *typesv1.ServiceSpec_Global:
		return "global"
	case *typesv1.ServiceSpec_Replicated:
		return "replicated"
	}
	return ""
}

// Replicas is running/desired tasks, with the per-node cap when set.
func (r *serviceRow) Replicas() string {
	running, desired := r.st.GetRunningTasks(), r.st.GetDesiredTasks()
	if max := r.s.GetSpec().GetTask().GetPlacement().GetMaxReplicas(); max > 0 && r.Mode() == "replicated" {
		return fmt.Sprintf("%d/%d (max %d per node)", running, desired, max)
	}
	return fmt.Sprintf("%d/%d", running, desired)
}

// Image is the container image, shortened as Docker shows it.
func (r *serviceRow) Image() string {
	return familiarImage(r.s.GetSpec().GetTask().GetContainer().GetImage())
}

// Ports are the ingress-published ports, grouped into ranges.
func (r *serviceRow) Ports() string {
	ports := r.s.GetEndpoint().GetPorts()
	if len(ports) == 0 {
		// Not allocated yet: show what the spec asks for, when explicit.
		for _, p := range r.s.GetSpec().GetEndpoint().GetPorts() {
			if p.GetPublishedPort() != 0 {
				ports = append(ports, p)
			}
		}
	}
	return formatServicePorts(ports)
}

type portRange struct {
	pStart, pEnd, tStart, tEnd uint32
	protocol                   string
}

func (pr portRange) String() string {
	pub := strconv.FormatUint(uint64(pr.pStart), 10)
	if pr.pEnd > pr.pStart {
		pub = fmt.Sprintf("%d-%d", pr.pStart, pr.pEnd)
	}
	tgt := strconv.FormatUint(uint64(pr.tStart), 10)
	if pr.tEnd > pr.tStart {
		tgt = fmt.Sprintf("%d-%d", pr.tStart, pr.tEnd)
	}
	return fmt.Sprintf("*:%s->%s/%s", pub, tgt, pr.protocol)
}

// formatServicePorts groups consecutive ingress ports as docker/cli does:
// 80->80, 81->81 become "*:80-81->80-81/tcp"; host-mode ports are not shown.
func formatServicePorts(in []*typesv1.PortConfig) string {
	ports := make([]*typesv1.PortConfig, 0, len(in))
	for _, p := range in {
		if p.GetPublishMode() == typesv1.PortConfig_PUBLISH_MODE_INGRESS {
			ports = append(ports, p)
		}
	}
	sort.SliceStable(ports, func(i, j int) bool {
		pi, pj := protocolWord(ports[i].GetProtocol()), protocolWord(ports[j].GetProtocol())
		if pi == pj {
			return ports[i].GetPublishedPort() < ports[j].GetPublishedPort()
		}
		return pi < pj
	})
	var (
		out []string
		pr  portRange
	)
	for _, p := range ports {
		proto := protocolWord(p.GetProtocol())
		isRange := pr.tEnd != pr.tStart
		overlaps := p.GetTargetPort() <= pr.tEnd
		if proto != pr.protocol || p.GetPublishedPort()-pr.pEnd > 1 || p.GetTargetPort()-pr.tEnd > 1 || isRange && overlaps {
			if pr.pStart > 0 {
				out = append(out, pr.String())
			}
			pr = portRange{p.GetPublishedPort(), p.GetPublishedPort(), p.GetTargetPort(), p.GetTargetPort(), proto}
			continue
		}
		pr.pEnd, pr.tEnd = p.GetPublishedPort(), p.GetTargetPort()
	}
	if pr.pStart > 0 {
		out = append(out, pr.String())
	}
	return strings.Join(out, ", ")
}

func (a *App) newServiceListCommand() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List services",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.listServices(cmd.Context(), &controlv1.ListServicesRequest{})
			if err != nil {
				return err
			}
			return a.writeServices(resp, format, quiet)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only display IDs")
	cmd.Flags().StringVar(&format, "format", "", formatHelp)
	return cmd
}

func (a *App) listServices(ctx context.Context, req *controlv1.ListServicesRequest) (*controlv1.ListServicesResponse, error) {
	c, err := a.control()
	if err != nil {
		return nil, err
	}
	return c.ListServices(ctx, req)
}

func (a *App) writeServices(resp *controlv1.ListServicesResponse, format string, quiet bool) error {
	services := resp.GetServices()
	sort.SliceStable(services, func(i, j int) bool { return naturalLess(serviceName(services[i]), serviceName(services[j])) })
	rows := make([]any, len(services))
	for i, s := range services {
		rows[i] = &serviceRow{s: s, st: resp.GetStatuses()[s.GetId()]}
	}
	f := chooseFormat(format, quiet, defaultServiceTableFormat,
		`id: {{.ID}}\nname: {{.Name}}\nmode: {{.Mode}}\nreplicas: {{.Replicas}}\nimage: {{.Image}}\nports: {{.Ports}}\n`,
		`id: {{.ID}}`)
	return writeList(a.Stdout, f, serviceHeader, rows)
}

func (a *App) getService(ctx context.Context, ref string) (*typesv1.Service, error) {
	c, err := a.control()
	if err != nil {
		return nil, err
	}
	resp, err := c.GetService(ctx, &controlv1.GetServiceRequest{Ref: ref})
	if err != nil {
		return nil, notFoundAs(err, "service", ref)
	}
	return resp.GetService(), nil
}

func (a *App) newServiceInspectCommand() *cobra.Command {
	var (
		format string
		pretty bool
	)
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] SERVICE [SERVICE...]",
		Short: "Display detailed information on one or more services",
		Args:  requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pretty && format != "" {
				return errors.New("--format is incompatible with human friendly format")
			}
			get := func(ref string) (proto.Message, error) { return a.getService(cmd.Context(), ref) }
			if pretty {
				return a.inspectPretty(args, get, servicePrettyTemplate, func(m proto.Message) any {
					return &servicePretty{s: m.(*typesv1.Service)}
				})
			}
			return a.inspect(args, format, get)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", inspectFormatHelp)
	cmd.Flags().BoolVar(&pretty, "pretty", false, "Print the information in a human friendly format")
	return cmd
}

const servicePrettyTemplate = `
ID:		{{.ID}}
Name:		{{.Name}}
{{- if .Labels }}
Labels:
{{- range $k, $v := .Labels }}
 {{ $k }}{{if $v }}={{ $v }}{{ end }}
{{- end }}{{ end }}
Service Mode:
{{- if .IsGlobal }}	Global
{{- else }}	Replicated
 Replicas:	{{ .Replicas }}
{{- end }}
{{- if .UpdateState }}
UpdateStatus:
 State:		{{ .UpdateState }}
 Message:	{{ .UpdateMessage }}
{{- end }}
Placement:
{{- if .Constraints }}
 Constraints:	{{ .Constraints }}
{{- end }}
{{- if .Preferences }}
 Preferences:   {{ .Preferences }}
{{- end }}
{{- if .MaxReplicas }}
 Max Replicas Per Node:   {{ .MaxReplicas }}
{{- end }}
{{- with .Update }}
UpdateConfig:
 Parallelism:	{{ .Parallelism }}
{{- if .Delay }}
 Delay:		{{ .Delay }}
{{- end }}
 On failure:	{{ .OnFailure }}
{{- if .Monitor }}
 Monitoring Period: {{ .Monitor }}
{{- end }}
 Max failure ratio: {{ .MaxFailureRatio }}
 Update order:      {{ .Order }}
{{- end }}
{{- with .Rollback }}
RollbackConfig:
 Parallelism:	{{ .Parallelism }}
{{- if .Delay }}
 Delay:		{{ .Delay }}
{{- end }}
 On failure:	{{ .OnFailure }}
{{- if .Monitor }}
 Monitoring Period: {{ .Monitor }}
{{- end }}
 Max failure ratio: {{ .MaxFailureRatio }}
 Rollback order:    {{ .Order }}
{{- end }}
ContainerSpec:
 Image:		{{ .Image }}
{{- if .Args }}
 Args:		{{ range $arg := .Args }}{{ $arg }} {{ end }}
{{- end -}}
{{- if .Env }}
 Env:		{{ range $env := .Env }}{{ $env }} {{ end }}
{{- end -}}
{{- if .Dir }}
 Dir:		{{ .Dir }}
{{- end -}}
{{- if .User }}
 User: {{ .User }}
{{- end }}
{{- if .Mounts }}
Mounts:
{{- end }}
{{- range $m := .Mounts }}
 Target:	{{ $m.Target }}
  Source:	{{ $m.Source }}
  ReadOnly:	{{ $m.ReadOnly }}
  Type:		{{ $m.Type }}
{{- end -}}
{{- if .Resources }}
Resources:
{{- with .Reservations }}
 Reservations:
{{- if .CPU }}
  CPU:		{{ .CPU }}
{{- end }}
{{- if .Memory }}
  Memory:	{{ .Memory }}
{{- end }}{{ end }}
{{- with .Limits }}
 Limits:
{{- if .CPU }}
  CPU:		{{ .CPU }}
{{- end }}
{{- if .Memory }}
  Memory:	{{ .Memory }}
{{- end }}
{{- if .Pids }}
  PIDs:		{{ .Pids }}
{{- end }}{{ end }}{{ end }}
{{- if .Networks }}
Networks:
{{- range $network := .Networks }} {{ $network }}{{ end }} {{ end }}
Endpoint Mode:	{{ .EndpointMode }}
{{- if .Ports }}
Ports:
{{- range $port := .Ports }}
 PublishedPort = {{ $port.Published }}
  Protocol = {{ $port.Protocol }}
  TargetPort = {{ $port.Target }}
  PublishMode = {{ $port.Mode }}
{{- end }} {{ end }}
`

// servicePretty feeds servicePrettyTemplate with Docker's words.
type servicePretty struct{ s *typesv1.Service }

func (p *servicePretty) spec() *typesv1.ServiceSpec { return p.s.GetSpec() }
func (p *servicePretty) ID() string                 { return p.s.GetId() }
func (p *servicePretty) Name() string               { return serviceName(p.s) }
func (p *servicePretty) Labels() map[string]string  { return p.spec().GetAnnotations().GetLabels() }
func (p *servicePretty) IsGlobal() bool             { return p.spec().GetGlobal() != nil }
func (p *servicePretty) Replicas() uint64           { return p.spec().GetReplicated().GetReplicas() }
func (p *servicePretty) UpdateState() string {
	st := p.s.GetUpdateStatus().GetState()
	if st == typesv1.UpdateStatus_STATE_UNKNOWN {
		return ""
	}
	return enumWord(st.String(), "STATE_")
}
func (p *servicePretty) UpdateMessage() string { return p.s.GetUpdateStatus().GetMessage() }
func (p *servicePretty) Constraints() []string {
	return p.spec().GetTask().GetPlacement().GetConstraints()
}
func (p *servicePretty) Preferences() []string {
	return p.spec().GetTask().GetPlacement().GetPreferences()
}
func (p *servicePretty) MaxReplicas() uint64 {
	return p.spec().GetTask().GetPlacement().GetMaxReplicas()
}
func (p *servicePretty) Update() *prettyUpdate {
	return newPrettyUpdate(p.spec().GetUpdate())
}
func (p *servicePretty) Rollback() *prettyUpdate {
	return newPrettyUpdate(p.spec().GetRollback())
}
func (p *servicePretty) Image() string  { return p.spec().GetTask().GetContainer().GetImage() }
func (p *servicePretty) Args() []string { return p.spec().GetTask().GetContainer().GetArgs() }
func (p *servicePretty) Env() []string  { return p.spec().GetTask().GetContainer().GetEnv() }
func (p *servicePretty) Dir() string    { return p.spec().GetTask().GetContainer().GetDir() }
func (p *servicePretty) User() string   { return p.spec().GetTask().GetContainer().GetUser() }
func (p *servicePretty) Mounts() []prettyMount {
	var out []prettyMount
	for _, m := range p.spec().GetTask().GetContainer().GetMounts() {
		out = append(out, prettyMount{Target: m.GetTarget(), Source: m.GetSource(), ReadOnly: m.GetReadOnly(),
			Type: enumWord(m.GetType().String(), "TYPE_")})
	}
	return out
}
func (p *servicePretty) Resources() bool {
	return p.Reservations() != nil || p.Limits() != nil
}
func (p *servicePretty) Reservations() *prettyResources {
	return newPrettyResources(p.spec().GetTask().GetResources().GetReservations())
}
func (p *servicePretty) Limits() *prettyResources {
	return newPrettyResources(p.spec().GetTask().GetResources().GetLimits())
}
func (p *servicePretty) Networks() []string {
	var out []string
	nets := p.spec().GetTask().GetNetworks()
	if len(nets) == 0 {
		nets = p.spec().GetNetworks()
	}
	for _, n := range nets {
		out = append(out, n.GetTarget())
	}
	return out
}
func (p *servicePretty) EndpointMode() string {
	return enumWord(p.spec().GetEndpoint().GetMode().String(), "MODE_")
}
func (p *servicePretty) Ports() []prettyPort {
	var out []prettyPort
	ports := p.s.GetEndpoint().GetPorts()
	if len(ports) == 0 {
		ports = p.spec().GetEndpoint().GetPorts()
	}
	for _, pc := range ports {
		out = append(out, prettyPort{Published: pc.GetPublishedPort(), Target: pc.GetTargetPort(),
			Protocol: protocolWord(pc.GetProtocol()), Mode: publishModeWord(pc.GetPublishMode())})
	}
	return out
}

type prettyMount struct {
	Target, Source, Type string
	ReadOnly             bool
}

type prettyPort struct {
	Published, Target uint32
	Protocol, Mode    string
}

type prettyUpdate struct {
	Parallelism     uint64
	Delay, Monitor  time.Duration
	OnFailure       string
	MaxFailureRatio float32
	Order           string
}

func newPrettyUpdate(u *typesv1.UpdateConfig) *prettyUpdate {
	if u == nil {
		return nil
	}
	return &prettyUpdate{
		Parallelism:     u.GetParallelism(),
		Delay:           u.GetDelay().AsDuration(),
		Monitor:         u.GetMonitor().AsDuration(),
		OnFailure:       enumWord(u.GetFailureAction().String(), "FAILURE_ACTION_"),
		MaxFailureRatio: u.GetMaxFailureRatio(),
		Order:           enumWord(u.GetOrder().String(), "ORDER_"),
	}
}

type prettyResources struct {
	CPU    float64
	Memory string
	Pids   int64
}

func newPrettyResources(r *typesv1.Resources) *prettyResources {
	if r == nil || (r.GetNanoCpus() == 0 && r.GetMemoryBytes() == 0 && r.GetPids() == 0) {
		return nil
	}
	out := &prettyResources{CPU: float64(r.GetNanoCpus()) / 1e9, Pids: r.GetPids()}
	if r.GetMemoryBytes() > 0 {
		out.Memory = humanBinarySize(float64(r.GetMemoryBytes()))
	}
	return out
}

func (a *App) newServiceScaleCommand() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "scale SERVICE=REPLICAS [SERVICE=REPLICAS...]",
		Short: "Scale one or multiple replicated services",
		Args: func(cmd *cobra.Command, args []string) error {
			if err := requiresMinArgs(1)(cmd, args); err != nil {
				return err
			}
			for _, arg := range args {
				if k, v, ok := strings.Cut(arg, "="); !ok || k == "" || v == "" {
					return &statusError{
						msg: fmt.Sprintf("invalid scale specifier '%s'.\nSee '%s --help'.\n\nUsage:  %s\n\n%s",
							arg, cmd.CommandPath(), cmd.UseLine(), cmd.Short),
						code: 1,
					}
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.control()
			if err != nil {
				return err
			}
			var (
				errs []error
				ids  []string
			)
			for _, arg := range args {
				name, n, _ := strings.Cut(arg, "=")
				replicas, err := strconv.ParseUint(n, 10, 64)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: invalid replicas value %s: must be a non-negative number", name, n))
					continue
				}
				resp, err := c.ScaleService(ctx, &controlv1.ScaleServiceRequest{Ref: name, Replicas: replicas})
				if err != nil {
					if isConnectError(err) {
						return err
					}
					errs = append(errs, fmt.Errorf("%s: %v", name, notFoundAs(err, "service", name)))
					continue
				}
				fmt.Fprintf(a.Stdout, "%s scaled to %d\n", name, replicas)
				ids = append(ids, resp.GetService().GetId())
			}
			if !detach && len(errs) == 0 {
				for _, id := range ids {
					if err := a.waitOnService(ctx, id, false); err != nil {
						errs = append(errs, fmt.Errorf("%s: %v", id, err))
					}
				}
			}
			return joinErrors(errs)
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", true, "Exit immediately instead of waiting for the service to converge")
	return cmd
}

func (a *App) newServiceRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm SERVICE [SERVICE...]",
		Aliases: []string{"remove"},
		Short:   "Remove one or more services",
		Args:    requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.control()
			if err != nil {
				return err
			}
			var errs []error
			for _, ref := range args {
				if _, err := c.RemoveService(cmd.Context(), &controlv1.RemoveServiceRequest{Ref: ref}); err != nil {
					errs = append(errs, notFoundAs(err, "service", ref))
					continue
				}
				fmt.Fprintln(a.Stdout, ref)
			}
			return joinErrors(errs)
		},
	}
}
