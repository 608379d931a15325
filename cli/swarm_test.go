package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// fakeStarter stands in for starting shoal-manager: it records the flags,
// writes a log, and may report an early exit.
type fakeStarter struct {
	args    []string
	logPath string
	log     string
	exitErr error
	onStart func()
}

func (s *fakeStarter) StartManager(args []string, logPath string) (<-chan error, error) {
	s.args, s.logPath = args, logPath
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(logPath, []byte(s.log), 0o600); err != nil {
		return nil, err
	}
	ch := make(chan error, 1)
	if s.exitErr != nil {
		ch <- s.exitErr
	}
	if s.onStart != nil {
		s.onStart()
	}
	return ch, nil
}

// swarmHarness is a harness without SHOAL_HOST: swarm init finds the new
// manager through --run-dir.
func swarmHarness(t *testing.T) (*harness, *fakeStarter, string, string) {
	h := newHarness(t)
	delete(h.env, "SHOAL_HOST")
	runDir := filepath.Join(h.dir, "run")
	dataDir := filepath.Join(h.dir, "data")
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	h.fake.nodes = []*typesv1.Node{mkNode("node1id", "node1", typesv1.NodeState_NODE_STATE_READY, typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE,
		&typesv1.ManagerStatus{Leader: true})}
	st := &fakeStarter{}
	return h, st, runDir, dataDir
}

func TestSwarmInit(t *testing.T) {
	h, st, runDir, dataDir := swarmHarness(t)
	// The socket appears only after a few polls, as a real manager's does.
	sleeps := 0
	h.configure = func(a *App) {
		a.Daemon = st
		a.Sleep = func(ctx context.Context, d time.Duration) error {
			sleeps++
			if sleeps == 3 {
				h.serveAt(filepath.Join(runDir, "shoal.sock"))
			}
			return h.clock.Sleep(ctx, d)
		}
	}
	got := h.mustRun("--log-level", "debug", "swarm", "init", "--advertise-addr", "10.0.0.1", "--data-dir", dataDir, "--run-dir", runDir)
	want := "Swarm initialized: current node (node1id) is now a manager.\n\n" +
		"To add a worker to this swarm, run the following command:\n\n" +
		"    shoal swarm join --token SHL-1-digest-worker 10.0.0.1:2377\n\n" +
		"To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n"
	if got != want {
		t.Errorf("swarm init:\n%s\nwant:\n%s", got, want)
	}
	wantArgs := []string{"--advertise-addr", "10.0.0.1", "--data-dir", dataDir, "--run-dir", runDir, "--log-level", "debug", "--init"}
	if strings.Join(st.args, " ") != strings.Join(wantArgs, " ") {
		t.Errorf("daemon args %q, want %q", st.args, wantArgs)
	}
	if st.logPath != filepath.Join(dataDir, "manager.log") {
		t.Errorf("log path %s", st.logPath)
	}

	// A second init finds the manager and refuses.
	st.args = nil
	if code := h.run("swarm", "init", "--run-dir", runDir); code != 1 ||
		h.stderr.String() != "Error: This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.\n" {
		t.Errorf("second init: exit %d stderr %q", code, h.stderr.String())
	}
	if st.args != nil {
		t.Errorf("second init started a daemon: %q", st.args)
	}
}

func TestSwarmInitTimeoutShowsLog(t *testing.T) {
	h, st, runDir, dataDir := swarmHarness(t)
	st.log = strings.Repeat("noise\n", 30) + "level=ERROR msg=\"listen tcp 0.0.0.0:2377: bind: address already in use\"\n"
	h.configure = func(a *App) { a.Daemon = st }
	code := h.run("swarm", "init", "--data-dir", dataDir, "--run-dir", runDir)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	got := h.stderr.String()
	if !strings.HasPrefix(got, "Error: shoal-manager did not become ready within 30s; the last lines of "+filepath.Join(dataDir, "manager.log")+":\n    noise\n") ||
		!strings.HasSuffix(got, "    level=ERROR msg=\"listen tcp 0.0.0.0:2377: bind: address already in use\"\n") ||
		strings.Count(got, "noise") != 19 {
		t.Errorf("stderr:\n%s", got)
	}
	if h.clock.Now().Sub(epoch) < 30*time.Second {
		t.Errorf("gave up after %s", h.clock.Now().Sub(epoch))
	}
}

func TestSwarmInitDaemonExits(t *testing.T) {
	h, st, runDir, dataDir := swarmHarness(t)
	st.log = "fatal: open /var/lib/shoal/raft: permission denied\n"
	st.exitErr = errors.New("exit status 1")
	h.configure = func(a *App) { a.Daemon = st }
	if code := h.run("swarm", "init", "--data-dir", dataDir, "--run-dir", runDir); code != 1 {
		t.Fatalf("exit %d", code)
	}
	want := "Error: shoal-manager exited: exit status 1 before it was ready; the last lines of " + filepath.Join(dataDir, "manager.log") +
		":\n    fatal: open /var/lib/shoal/raft: permission denied\n"
	if h.stderr.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.stderr.String(), want)
	}
}

func TestSwarmJoin(t *testing.T) {
	h, st, runDir, dataDir := swarmHarness(t)
	h.fake.info.IsManager = false
	st.onStart = func() { h.serveAt(filepath.Join(runDir, "shoal.sock")) }
	h.configure = func(a *App) { a.Daemon = st }
	if got := h.mustRun("swarm", "join", "--token", "SHL-1-abc-def", "--data-dir", dataDir, "--run-dir", runDir, "10.0.0.1"); got != "This node joined a swarm as a worker.\n" {
		t.Errorf("join: %q", got)
	}
	wantArgs := "--data-dir " + dataDir + " --run-dir " + runDir + " --join 10.0.0.1:2377 --token SHL-1-abc-def"
	if strings.Join(st.args, " ") != wantArgs {
		t.Errorf("daemon args %q, want %q", strings.Join(st.args, " "), wantArgs)
	}
	if code := h.run("swarm", "join", "10.0.0.1:2377"); code != 1 || !strings.Contains(h.stderr.String(), "a join token is required") {
		t.Errorf("join without token: exit %d %q", code, h.stderr.String())
	}
}

func TestSwarmJoinTokenAndLeave(t *testing.T) {
	h := newHarness(t).serve()
	got := h.mustRun("swarm", "join-token", "manager")
	if got != "To add a manager to this swarm, run the following command:\n\n    shoal swarm join --token SHL-1-digest-manager 10.0.0.1:2377\n\n" {
		t.Errorf("join-token manager:\n%s", got)
	}
	if got := h.mustRun("swarm", "join-token", "-q", "worker"); got != "SHL-1-digest-worker\n" {
		t.Errorf("join-token -q: %q", got)
	}
	got = h.mustRun("swarm", "join-token", "--rotate", "worker")
	if !strings.HasPrefix(got, "Successfully rotated worker join token.\n\nTo add a worker") || !strings.Contains(got, "SHL-1-digest-worker-rotated") {
		t.Errorf("rotate:\n%s", got)
	}
	if code := h.run("swarm", "join-token", "admin"); code != 1 || h.stderr.String() != "Error: unknown role admin\n" {
		t.Errorf("bad role: exit %d %q", code, h.stderr.String())
	}
	if got := h.mustRun("swarm", "leave", "--force"); got != "Node left the swarm.\n" || !h.fake.left[0].Force {
		t.Errorf("leave: %q %v", got, h.fake.left)
	}
}
