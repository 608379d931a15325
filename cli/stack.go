package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
)

func (a *App) newStackCommand() *cobra.Command {
	return newGroup("stack", "Manage Swarm stacks",
		a.newStackDeployCommand(),
		a.newStackListCommand(),
		a.newStackServicesCommand(),
		a.newStackPsCommand(),
		a.newStackRemoveCommand(),
	)
}

// validateStackName refuses empty names and names made only of quotes
// and spaces, as docker does.
func validateStackName(name string) error {
	v := strings.TrimFunc(name, func(r rune) bool { return unicode.IsSpace(r) || r == '"' || r == '\'' })
	if v == "" {
		return fmt.Errorf("invalid stack name: %q", name)
	}
	return nil
}

type deployOptions struct {
	files        []string
	prune        bool
	detach       bool
	quiet        bool
	registryAuth bool
	resolveImage string
}

func (a *App) newStackDeployCommand() *cobra.Command {
	var o deployOptions
	cmd := &cobra.Command{
		Use:     "deploy [OPTIONS] STACK",
		Aliases: []string{"up"},
		Short:   "Deploy a new stack or update an existing stack",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runStackDeploy(cmd, args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&o.files, "compose-file", "c", nil, `Path to a Compose file, or "-" to read from stdin`)
	f.BoolVar(&o.prune, "prune", false, "Prune services that are no longer referenced")
	f.BoolVarP(&o.detach, "detach", "d", true, "Exit immediately instead of waiting for the stack services to converge")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "Suppress progress output")
	// Accepted so that docker scripts run unchanged; shoal has no registry
	// credentials to forward and resolves images on the nodes.
	f.BoolVar(&o.registryAuth, "with-registry-auth", false, "Send registry authentication details to Swarm agents (accepted, no effect yet)")
	f.StringVar(&o.resolveImage, "resolve-image", "always", `Query the registry to resolve image digest and supported platforms ("always", "changed", "never") (accepted, no effect yet)`)
	_ = f.MarkHidden("with-registry-auth")
	_ = f.MarkHidden("resolve-image")
	return cmd
}

func (a *App) runStackDeploy(cmd *cobra.Command, name string, o deployOptions) error {
	ctx := cmd.Context()
	if err := validateStackName(name); err != nil {
		return err
	}
	switch o.resolveImage {
	case "always", "changed", "never":
	default:
		return fmt.Errorf("invalid option %s for flag --resolve-image", o.resolveImage)
	}
	if len(o.files) == 0 {
		return errors.New("specify a Compose file (with --compose-file)")
	}
	if a.LoadStack == nil {
		return errors.New("this shoal binary was built without a compose loader")
	}
	wd, err := a.composeWorkingDir(o.files[0])
	if err != nil {
		return err
	}
	spec, warnings, err := a.LoadStack(name, StackLoadOptions{
		Files:      o.files,
		Stdin:      a.Stdin,
		WorkingDir: wd,
		Env:        envMap(a.Environ()),
	})
	for _, w := range warnings {
		fmt.Fprintln(a.Stderr, w)
	}
	if err != nil {
		return err
	}
	if o.detach && !cmd.Flags().Changed("detach") {
		fmt.Fprintln(a.Stderr, "Since --detach=false was not specified, tasks will be created in the background.\n"+
			"In a future release, --detach=false will become the default.")
	}
	c, err := a.control()
	if err != nil {
		return err
	}
	resp, err := c.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: spec, Prune: o.prune})
	if err != nil {
		return err
	}
	for _, line := range resp.GetActions() {
		fmt.Fprintln(a.Stdout, line)
	}
	if o.detach {
		return nil
	}
	var errs []error
	for _, id := range resp.GetServiceIds() {
		if err := a.waitOnService(ctx, id, o.quiet); err != nil {
			if isConnectError(err) {
				return err
			}
			errs = append(errs, fmt.Errorf("%s: %v", id, err))
		}
	}
	return joinErrors(errs)
}

// composeWorkingDir is where relative paths in compose files start: the
// first file's directory, or the current one when reading stdin (docker's
// rule).
func (a *App) composeWorkingDir(first string) (string, error) {
	if first == "-" {
		return a.Getwd()
	}
	abs, err := filepath.Abs(first)
	if err != nil {
		return "", err
	}
	return filepath.Dir(abs), nil
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// stackRow is one `stack ls` line; its methods are the --format fields.
type stackRow struct{ s *controlv1.StackSummary }

func (r *stackRow) MarshalJSON() ([]byte, error) { return marshalRow(r) }

// Name is the stack's name.
func (r *stackRow) Name() string { return r.s.GetName() }

// Services is how many services the stack has.
func (r *stackRow) Services() string { return strconv.FormatInt(r.s.GetServices(), 10) }

func (a *App) newStackListCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"list"},
		Short:   "List stacks",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.control()
			if err != nil {
				return err
			}
			resp, err := c.ListStacks(cmd.Context(), &controlv1.ListStacksRequest{})
			if err != nil {
				return err
			}
			stacks := resp.GetStacks()
			sort.SliceStable(stacks, func(i, j int) bool { return naturalLess(stacks[i].GetName(), stacks[j].GetName()) })
			rows := make([]any, len(stacks))
			for i, s := range stacks {
				rows[i] = &stackRow{s: s}
			}
			f := chooseFormat(format, false, "table {{.Name}}\t{{.Services}}", "name: {{.Name}}\nservices: {{.Services}}\n", "")
			return writeList(a.Stdout, f, map[string]string{"Name": "NAME", "Services": "SERVICES"}, rows)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", formatHelp)
	return cmd
}

func (a *App) newStackServicesCommand() *cobra.Command {
	var (
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:   "services [OPTIONS] STACK",
		Short: "List the services in the stack",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validateStackName(name); err != nil {
				return err
			}
			resp, err := a.listServices(cmd.Context(), &controlv1.ListServicesRequest{Stack: name})
			if err != nil {
				return err
			}
			if len(resp.GetServices()) == 0 {
				// Docker says so on stderr and succeeds.
				fmt.Fprintln(a.Stderr, "Nothing found in stack:", name)
				return nil
			}
			return a.writeServices(resp, format, quiet)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only display IDs")
	cmd.Flags().StringVar(&format, "format", "", formatHelp)
	return cmd
}

func (a *App) newStackPsCommand() *cobra.Command {
	var o taskListOptions
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS] STACK",
		Short: "List the tasks in the stack",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			if err := validateStackName(name); err != nil {
				return err
			}
			req := &controlv1.ListTasksRequest{Stack: name}
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
			if len(resp.GetTasks()) == 0 {
				return fmt.Errorf("nothing found in stack: %s", name)
			}
			return a.printTasks(ctx, resp.GetTasks(), o)
		},
	}
	addTaskListFlags(cmd, &o)
	return cmd
}

func (a *App) newStackRemoveCommand() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:     "rm [OPTIONS] STACK [STACK...]",
		Aliases: []string{"remove", "down"},
		Short:   "Remove one or more stacks",
		Args:    requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			for _, name := range args {
				if err := validateStackName(name); err != nil {
					return err
				}
			}
			c, err := a.control()
			if err != nil {
				return err
			}
			var errs []error
			for _, name := range args {
				resp, err := c.RemoveStack(ctx, &controlv1.RemoveStackRequest{Name: name})
				if err != nil && !isNotFound(err) {
					if isConnectError(err) {
						return err
					}
					errs = append(errs, fmt.Errorf("failed to remove stack %s: %v", name, err))
					continue
				}
				if len(resp.GetActions()) == 0 {
					fmt.Fprintln(a.Stderr, "Nothing found in stack:", name)
					continue
				}
				for _, line := range resp.GetActions() {
					fmt.Fprintln(a.Stdout, line)
				}
				if !detach {
					if err := a.waitStackTasksGone(ctx, name); err != nil {
						errs = append(errs, fmt.Errorf("failed to wait on tasks of stack: %s: %v", name, err))
					}
				}
			}
			return joinErrors(errs)
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", true, "Do not wait for stack removal")
	return cmd
}

// waitStackTasksGone polls until every task of the stack has ended (or
// has been deleted), for `stack rm --detach=false`.
func (a *App) waitStackTasksGone(ctx context.Context, name string) error {
	c, err := a.control()
	if err != nil {
		return err
	}
	for {
		resp, err := c.ListTasks(ctx, &controlv1.ListTasksRequest{Stack: name})
		if err != nil {
			return err
		}
		live := 0
		for _, t := range resp.GetTasks() {
			if !terminalState(t.GetStatus().GetState()) {
				live++
			}
		}
		if live == 0 {
			return nil
		}
		if err := a.Sleep(ctx, a.PollInterval); err != nil {
			return err
		}
	}
}
