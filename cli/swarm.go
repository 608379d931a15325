package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Defaults of the manager's path flags; the CLI needs them to find the
// manager's log and socket when the user did not pass the flags.
const (
	defaultDataDir = "/var/lib/shoal"
	socketName     = "shoal.sock"
	managerLogName = "manager.log"
)

func (a *App) newSwarmCommand() *cobra.Command {
	return newGroup("swarm", "Manage Swarm",
		a.newSwarmInitCommand(),
		a.newSwarmJoinCommand(),
		a.newSwarmLeaveCommand(),
		a.newJoinTokenCommand(),
	)
}

// daemonOptions are the manager flags `swarm init` and `swarm join` pass on.
type daemonOptions struct {
	advertiseAddr string
	listenAddr    string
	dataDir       string
	runDir        string
}

func addDaemonFlags(cmd *cobra.Command, o *daemonOptions) {
	f := cmd.Flags()
	f.StringVar(&o.advertiseAddr, "advertise-addr", "", "Advertised address (format: \"<ip|interface>[:port]\")")
	f.StringVar(&o.listenAddr, "listen-addr", "0.0.0.0:2377", "Listen address (format: \"<ip|interface>[:port]\")")
	f.StringVar(&o.dataDir, "data-dir", defaultDataDir, "Directory for the node's state (Raft log, certificates, images, containers)")
	f.StringVar(&o.runDir, "run-dir", "/run/shoal", "Directory for the node's sockets")
}

// args are the flags the user set explicitly, so the daemon's own
// defaults apply to the rest.
func (o *daemonOptions) args(cmd *cobra.Command) []string {
	var args []string
	for _, name := range []string{"advertise-addr", "listen-addr", "data-dir", "run-dir"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			args = append(args, "--"+name, f.Value.String())
		}
	}
	// `shoal --log-level debug swarm init` debugs the manager too.
	if f := cmd.Flags().Lookup("log-level"); f != nil && f.Changed {
		args = append(args, "--log-level", f.Value.String())
	}
	return args
}

func (a *App) newSwarmInitCommand() *cobra.Command {
	var o daemonOptions
	cmd := &cobra.Command{
		Use:   "init [OPTIONS]",
		Short: "Initialize a swarm",
		Long: "Initialize a swarm: start shoal-manager in the background as the first\n" +
			"manager of a new cluster, and wait until it is ready.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			args := append(o.args(cmd), "--init")
			if f := cmd.Flags().Lookup("cert-expiry"); f.Changed {
				args = append(args, "--cert-expiry", f.Value.String())
			}
			return a.startDaemon(cmd, &o, args)
		},
	}
	addDaemonFlags(cmd, &o)
	cmd.Flags().Duration("cert-expiry", 90*24*time.Hour, "Validity period for node certificates (ns|us|ms|s|m|h)")
	return cmd
}

func (a *App) newSwarmJoinCommand() *cobra.Command {
	var (
		o     daemonOptions
		token string
	)
	cmd := &cobra.Command{
		Use:   "join [OPTIONS] HOST:PORT",
		Short: "Join a swarm as a node and/or manager",
		Long: "Join a swarm: start shoal-manager in the background, joining the\n" +
			"cluster at HOST:PORT with a worker or manager token.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				return errors.New("a join token is required: pass --token (run 'shoal swarm join-token worker' on a manager to see it)")
			}
			addr := args[0]
			if _, _, err := net.SplitHostPort(addr); err != nil {
				addr = net.JoinHostPort(addr, "2377")
			}
			return a.startDaemon(cmd, &o, append(o.args(cmd), "--join", addr, "--token", token))
		},
	}
	addDaemonFlags(cmd, &o)
	cmd.Flags().StringVar(&token, "token", "", "Token for entry into the swarm")
	return cmd
}

// startDaemon is `swarm init` and `swarm join`: refuse if a manager already
// answers, start shoal-manager, wait until it reports this node ready, then
// print what Docker prints.
func (a *App) startDaemon(cmd *cobra.Command, o *daemonOptions, daemonArgs []string) error {
	ctx := cmd.Context()
	// The new manager's socket is under --run-dir; follow it unless the
	// user pointed -H or $SHOAL_HOST elsewhere.
	if a.host == "" && a.Getenv("SHOAL_HOST") == "" && cmd.Flags().Changed("run-dir") {
		a.host = "unix://" + filepath.Join(o.runDir, socketName)
	}
	if _, err := a.probeInfo(ctx); err == nil {
		return errors.New(`This node is already part of a swarm. Use "shoal swarm leave" to leave this swarm and join another one.`)
	} else if !isConnectError(err) {
		return err
	}

	logPath := filepath.Join(o.dataDir, managerLogName)
	exited, err := a.Daemon.StartManager(daemonArgs, logPath)
	if err != nil {
		return fmt.Errorf("could not start %s: %v", ManagerBinary, err)
	}
	info, err := a.waitReady(ctx, exited, logPath)
	if err != nil {
		return err
	}

	out := a.Stdout
	if !contains(daemonArgs, "--init") {
		if info.GetIsManager() {
			fmt.Fprintln(out, "This node joined a swarm as a manager.")
		} else {
			fmt.Fprintln(out, "This node joined a swarm as a worker.")
		}
		return nil
	}
	fmt.Fprintf(out, "Swarm initialized: current node (%s) is now a manager.\n\n", info.GetNodeId())
	if err := a.printJoinCommand(ctx, out, true, false); err != nil {
		return err
	}
	fmt.Fprintln(out, "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.")
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func isConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// probeInfo asks Info on a fresh connection: gRPC backs off after a failed
// dial, and a poll loop must see the socket the moment it appears.
func (a *App) probeInfo(ctx context.Context) (*controlv1.InfoResponse, error) {
	a.closeConn()
	c, err := a.control()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.Info(ctx, &controlv1.InfoRequest{})
}

// waitReady polls until the node has an id and, on a manager, its node
// object is READY. On a timeout or an early exit it shows the end of the
// manager's log, which is where the reason is.
func (a *App) waitReady(ctx context.Context, exited <-chan error, logPath string) (*controlv1.InfoResponse, error) {
	deadline := a.Now().Add(a.ReadyTimeout)
	var lastErr error
	for {
		select {
		case werr := <-exited:
			reason := "exited"
			if werr != nil {
				reason = "exited: " + werr.Error()
			}
			return nil, a.withLogTail(fmt.Sprintf("%s %s before it was ready", ManagerBinary, reason), logPath)
		default:
		}
		info, err := a.probeInfo(ctx)
		if err == nil && info.GetNodeId() != "" {
			if !info.GetIsManager() {
				// A worker has no node table to ask; an id means it joined.
				return info, nil
			}
			c, _ := a.control()
			nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, nerr := c.GetNode(nctx, &controlv1.GetNodeRequest{Ref: info.GetNodeId()})
			cancel()
			if nerr == nil && resp.GetNode().GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY {
				return info, nil
			}
			err = nerr
		}
		if err != nil {
			lastErr = err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !a.Now().Before(deadline) {
			msg := fmt.Sprintf("%s did not become ready within %s", ManagerBinary, a.ReadyTimeout)
			if lastErr != nil && !isConnectError(lastErr) {
				msg += " (" + lastErr.Error() + ")"
			}
			return nil, a.withLogTail(msg, logPath)
		}
		if err := a.Sleep(ctx, a.PollInterval); err != nil {
			return nil, err
		}
	}
}

func (a *App) withLogTail(msg, logPath string) error {
	tail := tailFile(logPath, 20)
	if tail == "" {
		return fmt.Errorf("%s; %s is empty", msg, logPath)
	}
	return fmt.Errorf("%s; the last lines of %s:\n%s", msg, logPath, indent(tail, "    "))
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

func (a *App) printJoinCommand(ctx context.Context, out io.Writer, worker, manager bool) error {
	c, err := a.control()
	if err != nil {
		return err
	}
	resp, err := c.GetJoinTokens(ctx, &controlv1.GetJoinTokensRequest{})
	if err != nil {
		return err
	}
	if worker {
		fmt.Fprintf(out, "To add a worker to this swarm, run the following command:\n\n    shoal swarm join --token %s %s\n\n",
			resp.GetTokens().GetWorker(), resp.GetAddr())
	}
	if manager {
		fmt.Fprintf(out, "To add a manager to this swarm, run the following command:\n\n    shoal swarm join --token %s %s\n\n",
			resp.GetTokens().GetManager(), resp.GetAddr())
	}
	return nil
}

func (a *App) newSwarmLeaveCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "leave [OPTIONS]",
		Short: "Leave the swarm",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.control()
			if err != nil {
				return err
			}
			if _, err := c.Leave(cmd.Context(), &controlv1.LeaveRequest{Force: force}); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, "Node left the swarm.")
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force this node to leave the swarm, ignoring warnings")
	return cmd
}

func (a *App) newJoinTokenCommand() *cobra.Command {
	var rotate, quiet bool
	cmd := &cobra.Command{
		Use:   "join-token [OPTIONS] (worker|manager)",
		Short: "Manage join tokens",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role := args[0]
			worker, manager := role == "worker", role == "manager"
			if !worker && !manager {
				return errors.New("unknown role " + role)
			}
			ctx := cmd.Context()
			c, err := a.control()
			if err != nil {
				return err
			}
			if rotate {
				if _, err := c.RotateJoinToken(ctx, &controlv1.RotateJoinTokenRequest{Worker: worker, Manager: manager}); err != nil {
					return err
				}
				if !quiet {
					fmt.Fprintf(a.Stdout, "Successfully rotated %s join token.\n\n", role)
				}
			}
			if quiet {
				resp, err := c.GetJoinTokens(ctx, &controlv1.GetJoinTokensRequest{})
				if err != nil {
					return err
				}
				tok := resp.GetTokens().GetWorker()
				if manager {
					tok = resp.GetTokens().GetManager()
				}
				fmt.Fprintln(a.Stdout, tok)
				return nil
			}
			return a.printJoinCommand(ctx, a.Stdout, worker, manager)
		},
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "Rotate join token")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only display token")
	return cmd
}
