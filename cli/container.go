package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func (a *App) newContainerCommand() *cobra.Command {
	return newGroup("container", "Manage containers on this node",
		a.newContainerListCommand(),
		a.newContainerLogsCommand(),
		a.newContainerExecCommand(),
		a.newContainerInspectCommand(),
		a.newContainerTopCommand(),
	)
}

const defaultContainerTableFormat = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"

var containerHeader = map[string]string{
	"ID":         "CONTAINER ID",
	"Image":      "IMAGE",
	"Command":    "COMMAND",
	"RunningFor": "CREATED",
	"CreatedAt":  "CREATED AT",
	"Status":     "STATUS",
	"State":      "STATE",
	"Ports":      "PORTS",
	"Names":      "NAMES",
}

// containerRow is one `container ls` line.
type containerRow struct {
	c     ContainerSummary
	trunc bool
	now   time.Time
}

func (r *containerRow) MarshalJSON() ([]byte, error) { return marshalRow(r) }

// ID is the container id, 12 characters unless --no-trunc.
func (r *containerRow) ID() string {
	if r.trunc {
		return truncateID(r.c.ID)
	}
	return r.c.ID
}

// Image is the container's image.
func (r *containerRow) Image() string { return r.c.Image }

// Command is the quoted command, cut to 20 characters unless --no-trunc.
func (r *containerRow) Command() string {
	c := r.c.Command
	if r.trunc {
		c = ellipsis(c, 20)
	}
	return strconv.Quote(c)
}

// RunningFor is the container's age ("5 minutes ago").
func (r *containerRow) RunningFor() string { return humanDuration(r.now.Sub(r.c.Created)) + " ago" }

// CreatedAt is when the container was created.
func (r *containerRow) CreatedAt() string {
	return r.c.Created.Format("2006-01-02 15:04:05 -0700 MST")
}

// Status is e.g. "Up 5 minutes".
func (r *containerRow) Status() string { return r.c.Status }

// State is e.g. "running".
func (r *containerRow) State() string { return r.c.State }

// Ports are the container's published ports.
func (r *containerRow) Ports() string { return r.c.Ports }

// Names are the container's names, comma separated.
func (r *containerRow) Names() string {
	names := make([]string, len(r.c.Names))
	for i, n := range r.c.Names {
		names[i] = strings.TrimPrefix(n, "/")
	}
	return strings.Join(names, ",")
}

func (a *App) newContainerListCommand() *cobra.Command {
	var (
		all, quiet, noTrunc bool
		format              string
	)
	cmd := &cobra.Command{
		Use:     "ls [OPTIONS]",
		Aliases: []string{"ps", "list"},
		Short:   "List containers on this node",
		Long:    "List containers on this node.",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := a.Node.ContainerList(cmd.Context(), all)
			if err != nil {
				return err
			}
			now := a.Now()
			rows := make([]any, len(cs))
			for i, c := range cs {
				rows[i] = &containerRow{c: c, trunc: !noTrunc, now: now}
			}
			f := chooseFormat(format, quiet, defaultContainerTableFormat,
				`container_id: {{.ID}}\nimage: {{.Image}}\ncommand: {{.Command}}\ncreated_at: {{.CreatedAt}}\nstate: {{.State}}\nstatus: {{.Status}}\nnames: {{.Names}}\nports: {{.Ports}}\n`,
				`container_id: {{.ID}}`)
			return writeList(a.Stdout, f, containerHeader, rows)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&all, "all", "a", false, "Show all containers (default shows just running)")
	f.BoolVarP(&quiet, "quiet", "q", false, "Only display container IDs")
	f.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	f.StringVar(&format, "format", "", formatHelp)
	return cmd
}

func (a *App) newContainerLogsCommand() *cobra.Command {
	var (
		o     ContainerLogsOptions
		tail  string
		since string
	)
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Fetch the logs of a container",
		Long:  "Fetch the logs of a container on this node.",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseTail(tail)
			if err != nil {
				return err
			}
			o.Tail = n
			if o.Since, err = parseSince(since, a.Now()); err != nil {
				return err
			}
			return a.Node.ContainerLogs(cmd.Context(), args[0], o, a.Stdout, a.Stderr)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.Follow, "follow", "f", false, "Follow log output")
	f.StringVarP(&tail, "tail", "n", "all", "Number of lines to show from the end of the logs")
	f.StringVar(&since, "since", "", `Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)`)
	f.BoolVarP(&o.Timestamps, "timestamps", "t", false, "Show timestamps")
	return cmd
}

func (a *App) newContainerExecCommand() *cobra.Command {
	var o ExecOptions
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Execute a command in a running container",
		Long:  "Execute a command in a running container on this node.",
		Args:  requiresMinArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Cmd = args[1:]
			if o.Tty && o.Interactive && !a.StdinIsTerminal() {
				return errors.New("the input device is not a TTY")
			}
			if o.Tty && o.Interactive {
				// Keys go to the container as typed (Ctrl-C included).
				restore, err := makeRaw(os.Stdin)
				if err == nil {
					defer restore()
				}
			}
			var stdin = a.Stdin
			if !o.Interactive {
				stdin = nil
			}
			code, err := a.Node.ContainerExec(cmd.Context(), args[0], o, stdin, a.Stdout, a.Stderr)
			if err != nil {
				return err
			}
			if code != 0 {
				// Like docker, exit with the process's status.
				return &statusError{code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	// Flags after CONTAINER belong to the command run in it.
	f.SetInterspersed(false)
	f.BoolVarP(&o.Interactive, "interactive", "i", false, "Keep STDIN open even if not attached")
	f.BoolVarP(&o.Tty, "tty", "t", false, "Allocate a pseudo-TTY")
	f.BoolVarP(&o.Detach, "detach", "d", false, "Detached mode: run command in the background")
	f.StringArrayVarP(&o.Env, "env", "e", nil, "Set environment variables")
	f.StringVarP(&o.User, "user", "u", "", "Username or UID (format: \"<name|uid>[:<group|gid>]\")")
	f.StringVarP(&o.WorkDir, "workdir", "w", "", "Working directory inside the container")
	return cmd
}

func (a *App) newContainerInspectCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Display detailed information on one or more containers",
		Long:  "Display detailed information on one or more containers on this node.",
		Args:  requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var (
				objs []json.RawMessage
				errs []error
			)
			for _, ref := range args {
				b, err := a.Node.ContainerInspect(cmd.Context(), ref)
				if err != nil {
					if errors.Is(err, ErrNotImplemented) {
						return err
					}
					errs = append(errs, err)
					continue
				}
				objs = append(objs, b)
			}
			if format == "" || format == jsonFormatKey {
				raw, err := json.Marshal(objs)
				if err != nil {
					return err
				}
				if objs == nil {
					raw = []byte("[]")
				}
				var out bytes.Buffer
				if err := json.Indent(&out, raw, "", "    "); err != nil {
					return err
				}
				out.WriteByte('\n')
				_, _ = a.Stdout.Write(out.Bytes())
				return joinErrors(errs)
			}
			tmpl, err := parseTemplate(listFormat(format).template())
			if err != nil {
				return err
			}
			for _, o := range objs {
				var v any
				if err := json.Unmarshal(o, &v); err != nil {
					return err
				}
				if err := tmpl.Execute(a.Stdout, v); err != nil {
					return fmt.Errorf("template parsing error: %v", err)
				}
				fmt.Fprintln(a.Stdout)
			}
			return joinErrors(errs)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", inspectFormatHelp)
	return cmd
}

func (a *App) newContainerTopCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top CONTAINER [ps OPTIONS]",
		Short: "Display the running processes of a container",
		Long:  "Display the running processes of a container on this node.",
		Args:  requiresMinArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			titles, procs, err := a.Node.ContainerTop(cmd.Context(), args[0], args[1:])
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(a.Stdout, 20, 1, 3, ' ', 0)
			fmt.Fprintln(w, strings.Join(titles, "\t"))
			for _, p := range procs {
				fmt.Fprintln(w, strings.Join(p, "\t"))
			}
			return w.Flush()
		},
	}
	cmd.Flags().SetInterspersed(false)
	return cmd
}
