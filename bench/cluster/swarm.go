package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/internal/testcluster"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

const (
	// port is every node's --listen-addr port (Raft takes port+1); each
	// node has an address of its own.
	port = 2377
	// imageRef is the helper image, imported on every node with CMD
	// `/bin/helper serve 80`.
	imageRef = "shoal-bench/helper:latest"
	// cliTimeout bounds one CLI run: a write without a leader fails
	// after 10 s (manager.proposeTimeout), so this is ample.
	cliTimeout = 30 * time.Second
	// serviceLabel names a container's service, as Docker's does.
	serviceLabel = "com.docker.swarm.service.name"
)

// member is the shoal daemon of one node of the cluster: a manager or a
// worker, as it joined.
type member struct {
	b       *bench
	node    *testcluster.Node
	manager bool
	proc    *testcluster.Process // the running daemon, or the last one
	stopped bool                 // the benchmark killed it or it left: not a failure
	id      string               // node id, from node.json, once joined

	conn *grpc.ClientConn
	ctl  controlv1.ControlClient
	scan *scanner
}

func (m *member) String() string {
	if m.manager {
		return m.node.Name + " (manager)"
	}
	return m.node.Name + " (worker)"
}

func (m *member) addr() string { return fmt.Sprintf("%s:%d", m.node.Addr, port) }

func (m *member) sock() string { return filepath.Join(m.node.RunDir, "shoal.sock") }

// cgroupParent is the node's --cgroup-parent: every node needs its own,
// since they share the host's cgroup hierarchies and a daemon owns what
// is under its parent.
func (m *member) cgroupParent() string { return m.b.cgroupPrefix + m.node.Name }

// start runs shoal-manager on the node, as e2e/cluster_test.go does, with
// extra flags (--init, or --join and --token; none to restart it on its
// data dir).
func (m *member) start(extra ...string) {
	args := append([]string{
		"--data-dir", m.node.DataDir, "--run-dir", m.node.RunDir,
		"--listen-addr", m.addr(), "--advertise-addr", m.addr(),
		"--init-path", filepath.Join(m.b.bin, "shoal-init"),
		"--cgroup-parent", m.cgroupParent(),
		"--log-level", m.b.cfg.logLevel,
	}, extra...)
	m.proc = m.node.Start(filepath.Join(m.b.bin, "shoal-manager"), args...)
	m.stopped = false
}

// kill sends SIGKILL to the daemon alone, as a crash would end it: its
// containers keep running. It returns once the daemon has exited.
func (m *member) kill() {
	m.stopped = true
	m.proc.Kill()
}

// exited reports an error if the daemon has exited: a wait for it is then
// hopeless.
func (m *member) exited() error {
	if m.proc != nil && m.proc.Exited() {
		return fmt.Errorf("%s: shoal-manager exited (%v); the end of its log:\n%s", m, m.proc.Err(), tail(m.proc.LogFile(), 20))
	}
	return nil
}

// readID reads the node id the daemon saved in node.json, which it writes
// once it has joined.
func (m *member) readID() string {
	b, err := os.ReadFile(filepath.Join(m.node.DataDir, "node.json"))
	if err != nil {
		return ""
	}
	var st struct {
		NodeID string `json:"node_id"`
	}
	if json.Unmarshal(b, &st) != nil {
		return ""
	}
	return st.NodeID
}

// client returns the control API on the node's socket. gRPC connects
// lazily and again after a restart of the daemon.
func (m *member) client() (controlv1.ControlClient, error) {
	if m.ctl != nil {
		return m.ctl, nil
	}
	conn, err := grpc.NewClient("unix://"+m.sock(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	m.conn, m.ctl = conn, controlv1.NewControlClient(conn)
	return m.ctl, nil
}

// nodes is what `shoal node ls` on this member shows, from the same call
// the CLI makes (ControlClient.ListNodes): each node's state and its
// manager status. Polling the API instead of running the CLI keeps the
// benchmark from loading the two CPUs with a process every few
// milliseconds.
func (m *member) nodes(ctx context.Context) ([]*typesv1.Node, error) {
	c, err := m.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := c.ListNodes(ctx, &controlv1.ListNodesRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetNodes(), nil
}

// shoal runs the CLI against this member's socket, in its network
// namespace, and returns its stdout; the error carries stderr.
func (m *member) shoal(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	full := append([]string{"--net=" + m.node.NetnsPath, "--", filepath.Join(m.b.bin, "shoal"), "-H", "unix://" + m.sock()}, args...)
	cmd := exec.CommandContext(ctx, m.b.nsenter, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: shoal %s: %v: %s%s", m.node.Name, strings.Join(args, " "), err,
			strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// containers counts the running containers of service on the node.
func (m *member) containers(service string) int {
	if m.scan == nil {
		m.scan = newScanner(m.node.DataDir)
	}
	return m.scan.running(service)
}

// nodeState is the state of node id in a node list, or 0 if it is not
// listed.
func nodeState(nodes []*typesv1.Node, id string) typesv1.NodeState {
	for _, n := range nodes {
		if n.GetId() == id {
			return n.GetStatus().GetState()
		}
	}
	return 0
}

// leaderOf is the node that a node list shows as Leader, or "".
func leaderOf(nodes []*typesv1.Node) string {
	for _, n := range nodes {
		if n.GetManagerStatus().GetLeader() {
			return n.GetId()
		}
	}
	return ""
}

const (
	ready = typesv1.NodeState_NODE_STATE_READY
	down  = typesv1.NodeState_NODE_STATE_DOWN
)

// pollInterval is how often a timed wait looks: every figure may be late
// by up to this much, plus the look itself (about a millisecond for the
// API, a few for a scan of the container records).
const pollInterval = 20 * time.Millisecond

// waitFor calls cond every pollInterval until it returns true, and
// returns when it did; it fails when cond fails, ctx ends or timeout
// passes.
func waitFor(ctx context.Context, what string, timeout time.Duration, cond func() (bool, error)) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return time.Time{}, fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// alive fails when one of the daemons that should run has exited.
func (b *bench) alive() error {
	var errs []error
	for _, m := range b.members {
		if m.proc != nil && !m.stopped {
			errs = append(errs, m.exited())
		}
	}
	return errors.Join(errs...)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
