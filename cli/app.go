// Package cli is the shoal command line: cobra commands that speak the
// control API of a manager and print what `docker` prints for the same verb,
// flag, table and format, so that a Docker swarm user feels at home.
//
// Everything that touches the outside world (streams, clock, terminal,
// starting the manager daemon, loading compose files, the node-local API)
// lives on App so that tests drive the real commands against an in-process
// fake manager without root and without daemons.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Version is the client's version; the build sets it with
// -ldflags "-X github.com/shoal-dev/shoal/cli.Version=…".
var Version = "0.1.0-dev"

// GitCommit is the commit the client was built from, set like Version.
var GitCommit = "unknown"

// DefaultHost is the manager's local socket, the CLI's default -H.
const DefaultHost = "unix:///run/shoal/shoal.sock"

// StackLoadOptions are the inputs of a compose load: the files given with
// -c ("-" is stdin), where relative paths start, and the environment used
// for ${VAR} interpolation.
type StackLoadOptions struct {
	Files      []string
	Stdin      io.Reader
	WorkingDir string
	Env        map[string]string
}

// StackLoader turns compose files into a StackSpec and warnings (unsupported
// keys and the like). cmd/shoal sets it to the stack package's loader; tests
// set a fake. It is a func, not an import, so that the CLI builds while the
// stack package is written in parallel.
type StackLoader func(name string, opts StackLoadOptions) (*typesv1.StackSpec, []string, error)

// App is one CLI invocation's world. NewApp fills it for a real process;
// tests replace the fields they need.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	// Getenv reads the environment (SHOAL_HOST, compose interpolation).
	Getenv func(string) string
	// Environ lists the environment as KEY=VALUE for compose interpolation.
	Environ func() []string
	// Getwd is the directory relative compose paths start from when reading stdin.
	Getwd func() (string, error)

	// Now and Sleep are the clock: task ages in `service ps` and the
	// polling loops read them, so tests inject a fake clock.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error

	// StdoutIsTerminal decides between redrawn progress bars and plain
	// lines; TerminalWidth decides whether the bars fit.
	StdoutIsTerminal func() bool
	StdinIsTerminal  func() bool
	TerminalWidth    func() int

	// Daemon starts shoal-manager for `swarm init` and `swarm join`.
	Daemon DaemonStarter
	// LoadStack parses compose files for `stack deploy`; nil means this
	// build has no loader wired in.
	LoadStack StackLoader
	// Node is the node-local image and container API (not served yet).
	Node NodeAPI

	// ReadyTimeout bounds how long `swarm init/join` waits for the new
	// manager (30 s unless a test shortens it).
	ReadyTimeout time.Duration
	// PollInterval is the pause between polls in wait loops.
	PollInterval time.Duration

	host     string
	logLevel string

	mu     sync.Mutex
	conn   *grpc.ClientConn
	ctl    controlv1.ControlClient
	dialer *recordingDialer
}

// NewApp returns an App wired to the process: os streams, the wall clock,
// the real daemon starter.
func NewApp() *App {
	return &App{
		Stdin:            os.Stdin,
		Stdout:           os.Stdout,
		Stderr:           os.Stderr,
		Getenv:           os.Getenv,
		Environ:          os.Environ,
		Getwd:            os.Getwd,
		Now:              time.Now,
		Sleep:            sleepCtx,
		StdoutIsTerminal: func() bool { return isTerminal(os.Stdout) },
		StdinIsTerminal:  func() bool { return isTerminal(os.Stdin) },
		TerminalWidth:    func() int { return terminalWidth(os.Stdout) },
		Daemon:           ExecStarter{},
		Node:             UnimplementedNodeAPI{},
	}
}

// fillDefaults lets tests set only what they care about.
func (a *App) fillDefaults() {
	if a.Stdin == nil {
		a.Stdin = strings.NewReader("")
	}
	if a.Stdout == nil {
		a.Stdout = io.Discard
	}
	if a.Stderr == nil {
		a.Stderr = io.Discard
	}
	if a.Getenv == nil {
		a.Getenv = func(string) string { return "" }
	}
	if a.Environ == nil {
		a.Environ = func() []string { return nil }
	}
	if a.Getwd == nil {
		a.Getwd = os.Getwd
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Sleep == nil {
		a.Sleep = sleepCtx
	}
	if a.StdoutIsTerminal == nil {
		a.StdoutIsTerminal = func() bool { return false }
	}
	if a.StdinIsTerminal == nil {
		a.StdinIsTerminal = func() bool { return false }
	}
	if a.TerminalWidth == nil {
		a.TerminalWidth = func() int { return 0 }
	}
	if a.Daemon == nil {
		a.Daemon = ExecStarter{}
	}
	if a.Node == nil {
		a.Node = UnimplementedNodeAPI{}
	}
	if a.ReadyTimeout == 0 {
		a.ReadyTimeout = 30 * time.Second
	}
	if a.PollInterval == 0 {
		a.PollInterval = 200 * time.Millisecond
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run executes one command line (without the program name) and returns the
// process exit code: 0, 1 for errors, 125 for flag errors as Docker does.
// Errors are printed on Stderr in Docker's words, never as Go values.
func (a *App) Run(ctx context.Context, args []string) int {
	a.fillDefaults()
	root := a.NewRootCommand()
	root.SetArgs(args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	a.closeConn()
	if err == nil {
		return 0
	}
	var se *statusError
	if errors.As(err, &se) {
		if se.msg != "" {
			fmt.Fprintln(a.Stderr, se.msg)
		}
		return se.code
	}
	var ce *connectError
	if errors.As(err, &ce) {
		// Docker prints "Cannot connect to the Docker daemon…" bare; so do we.
		fmt.Fprintln(a.Stderr, ce.Error())
		return 1
	}
	fmt.Fprintln(a.Stderr, "Error: "+err.Error())
	return 1
}

// statusError carries an exact message and exit code (usage and flag
// errors), printed without the "Error: " prefix as Docker does.
type statusError struct {
	msg  string
	code int
}

func (e *statusError) Error() string { return e.msg }

// NewRootCommand builds the command tree. Exposed so cmd/shoal and docs
// generators can walk it; Run is the usual entry point.
func (a *App) NewRootCommand() *cobra.Command {
	a.fillDefaults()
	root := &cobra.Command{
		Use:   "shoal [OPTIONS] COMMAND",
		Short: "A Swarm-mode container orchestrator",
		Long: "shoal runs compose stacks on a cluster of nodes, with docker swarm's\n" +
			"verbs, flags and tables.",
		SilenceErrors:         true,
		SilenceUsage:          true,
		DisableFlagsInUseLine: true,
		Version:               Version,
		Args:                  rootArgs,
		RunE:                  showHelp,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.applyGlobalFlags()
		},
	}
	root.SetVersionTemplate("shoal version {{.Version}}, build " + GitCommit + "\n")
	root.SetFlagErrorFunc(flagError)
	root.CompletionOptions.HiddenDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVarP(&a.host, "host", "H", "", "Manager socket to connect to (default "+DefaultHost+", or $SHOAL_HOST)")
	pf.StringVarP(&a.logLevel, "log-level", "l", "info", `Set the logging level ("debug", "info", "warn", "error", "fatal")`)

	root.AddCommand(
		a.newSwarmCommand(),
		a.newNodeCommand(),
		a.newStackCommand(),
		a.newServiceCommand(),
		a.newImageCommand(),
		a.newContainerCommand(),
		a.newVersionCommand(),
	)
	forEachCommand(root, func(c *cobra.Command) {
		c.DisableFlagsInUseLine = true
	})
	return root
}

func forEachCommand(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		forEachCommand(sub, f)
	}
}

func (a *App) applyGlobalFlags() error {
	var lvl slog.Level
	switch strings.ToLower(a.logLevel) {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error", "fatal", "panic":
		lvl = slog.LevelError
	default:
		return &statusError{msg: fmt.Sprintf("Unable to parse logging level: %s", a.logLevel), code: 1}
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: lvl})).With("component", "cli"))
	return nil
}

// resolvedHost is -H, else $SHOAL_HOST, else the local socket.
func (a *App) resolvedHost() string {
	if a.host != "" {
		return a.host
	}
	if h := a.Getenv("SHOAL_HOST"); h != "" {
		return h
	}
	return DefaultHost
}

func showHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }

// flagError words flag errors as Docker does, with exit code 125.
func flagError(cmd *cobra.Command, err error) error {
	return &statusError{
		msg:  fmt.Sprintf("%s\n\nUsage:  %s\n\nRun '%s --help' for more information", err, cmd.UseLine(), cmd.CommandPath()),
		code: 125,
	}
}

func rootArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return &statusError{
		msg:  fmt.Sprintf("shoal: '%s' is not a shoal command.\nSee 'shoal --help'", args[0]),
		code: 1,
	}
}

// groupArgs is Args for commands that only hold subcommands.
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return &statusError{
		msg: fmt.Sprintf("shoal: unknown command: %s %s\n\nUsage:  %s\n\nRun '%s --help' for more information",
			cmd.CommandPath(), args[0], cmd.UseLine(), cmd.CommandPath()),
		code: 1,
	}
}

func pluralize(word string, n int) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// The positional-argument checks below reproduce docker/cli's texts.

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return &statusError{
		msg: fmt.Sprintf("shoal: '%s' accepts no arguments\n\nUsage:  %s\n\nRun '%s --help' for more information",
			cmd.CommandPath(), cmd.UseLine(), cmd.CommandPath()),
		code: 1,
	}
}

func requiresMinArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= n {
			return nil
		}
		return &statusError{
			msg: fmt.Sprintf("shoal: '%s' requires at least %d %s\n\nUsage:  %s\n\nSee '%s --help' for more information",
				cmd.CommandPath(), n, pluralize("argument", n), cmd.UseLine(), cmd.CommandPath()),
			code: 1,
		}
	}
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		return &statusError{
			msg: fmt.Sprintf("shoal: '%s' requires %d %s\n\nUsage:  %s\n\nRun '%s --help' for more information",
				cmd.CommandPath(), n, pluralize("argument", n), cmd.UseLine(), cmd.CommandPath()),
			code: 1,
		}
	}
}

func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) >= lo && len(args) <= hi {
			return nil
		}
		return &statusError{
			msg: fmt.Sprintf("shoal: '%s' requires at least %d and at most %d %s\n\nUsage:  %s\n\nRun '%s --help' for more information",
				cmd.CommandPath(), lo, hi, pluralize("argument", hi), cmd.UseLine(), cmd.CommandPath()),
			code: 1,
		}
	}
}

// newGroup makes a command that only holds subcommands and shows its help
// when run bare, as `docker service` does.
func newGroup(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  groupArgs,
		RunE:  showHelp,
	}
	c.AddCommand(subs...)
	return c
}

// joinErrors joins per-argument errors with newlines (as Docker prints them).
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if ce := firstConnectError(errs); ce != nil {
		return ce
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n"))
}
