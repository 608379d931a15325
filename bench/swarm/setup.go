package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shoal-dev/shoal/internal/testutil"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// imageRef is the helper image, imported with CMD `/bin/helper serve 80`.
const imageRef = "shoal-bench/helper:latest"

// bench holds everything a run sets up, so that cleanup can undo it.
type bench struct {
	cfg config

	bin          string // absolute -bin
	tmp          string // data dir, compose files, manager log
	dataDir      string
	runDir       string
	logPath      string
	addr         string // --listen-addr and --advertise-addr
	cgroupParent string
	seedPort     int // the seed stack's published port

	mgr       *exec.Cmd
	mgrExited chan struct{} // closed once mgr has been waited for

	conn *grpc.ClientConn
	ctl  controlv1.ControlClient
	node nodev1.NodeClient

	// stacks deployed and not yet seen removed, for cleanup.
	stacks map[string]bool
	// networks of each stack deployed (ids), whose links must go when
	// the stack goes.
	networks map[string][]string

	managerVersion string
	idle           cpuUse // the 2 s just before the first measurement
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (b *bench) setup(ctx context.Context) error {
	var err error
	b.stacks = map[string]bool{}
	b.networks = map[string][]string{}
	if b.bin, err = filepath.Abs(b.cfg.bin); err != nil {
		return err
	}
	for _, name := range []string{"shoal", "shoal-manager", "shoal-init"} {
		if fi, err := os.Stat(filepath.Join(b.bin, name)); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("-bin %s: no executable %s (run `make build` first)", b.cfg.bin, name)
		}
	}
	if err := checkModule(ctx); err != nil {
		return err
	}
	// Every manager on a host uses the same link prefix and nftables
	// table (network.Config.Prefix and Table have no flag), and a manager
	// that starts or leaves removes the links of that prefix it does not
	// own: the benchmark's manager would cut another swarm's tasks off
	// their networks, and that swarm's leave would cut the benchmark's.
	if others := pidsWhere(func(pid int) bool { return filepath.Base(argv0(pid)) == "shoal-manager" }); len(others) > 0 && !b.cfg.shareHost {
		return fmt.Errorf("another shoal-manager runs on this machine (pids %v): managers on one host share their network link names and nftables table, so each would break the other's networks; stop it or pass -share-host", others)
	}
	r := randHex(4)
	b.cgroupParent = "shoal-bench-" + r
	if b.tmp, err = os.MkdirTemp("", "shoal-bench-swarm-"); err != nil {
		return err
	}
	// The manager's socket and the containers' exec sockets live here;
	// sun_path holds 107 bytes, so keep it short.
	if b.runDir, err = os.MkdirTemp("/run", "shbs-"); err != nil {
		return err
	}
	b.dataDir = filepath.Join(b.tmp, "data")
	// Outside the data dir, which `swarm leave` deletes: the log is read
	// after the run (-keep-log).
	b.logPath = filepath.Join(b.tmp, "manager.log")
	if b.addr, err = freePortPair(); err != nil {
		return err
	}
	if b.seedPort, err = freePort(); err != nil {
		return err
	}

	// The helper image of the runtime's tests, built before the manager
	// starts so that the Go build does not compete with it.
	var tarball string
	if err := withTB(b.tmp, func(t testing.TB) { tarball = testutil.HelperRootfs(t, nil) }); err != nil {
		return fmt.Errorf("helper image: %w", err)
	}

	if err := b.startManager(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: manager ready at %s (data %s, run %s, cgroup parent %s)\n", b.addr, b.dataDir, b.runDir, b.cgroupParent)
	if _, err := b.shoal(ctx, "image", "import",
		"--change", `CMD ["/bin/helper", "serve", "80"]`, "--change", "ENV PATH=/bin",
		tarball, imageRef); err != nil {
		return err
	}
	return nil
}

// checkModule makes sure the program runs in the shoal repository, where
// testutil can build the helper and go test finds manager/raftnode.
func checkModule(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "go", "list", "-m").Output()
	if err != nil || strings.TrimSpace(string(out)) != "github.com/shoal-dev/shoal" {
		return errors.New("run this from the shoal repository: go run ./bench/swarm -bin bin")
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePortPair finds a free port p on 127.0.0.1 with p+1 free too: Raft
// listens on the dispatcher's port + 1.
func freePortPair() (string, error) {
	for range 100 {
		p, err := freePort()
		if err != nil {
			return "", err
		}
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1)); err == nil {
			l.Close()
			return fmt.Sprintf("127.0.0.1:%d", p), nil
		}
	}
	return "", errors.New("no pair of free ports on 127.0.0.1")
}

// startManager starts shoal-manager exactly as `shoal swarm init` does
// (cli/daemon.go: the same flags, --init last, stdin /dev/null, output
// appended to the log, a session of its own), plus --cgroup-parent, which
// the CLI does not pass, so that the benchmark's containers live under a
// cgroup of their own. It then waits, as the CLI does, until the node is
// READY.
func (b *bench) startManager(ctx context.Context) error {
	logf, err := os.OpenFile(b.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child holds its own descriptor
	args := []string{
		"--advertise-addr", b.addr, "--listen-addr", b.addr,
		"--data-dir", b.dataDir, "--run-dir", b.runDir,
		"--log-level", b.cfg.logLevel,
		"--cgroup-parent", b.cgroupParent,
		"--init",
	}
	cmd := exec.Command(filepath.Join(b.bin, "shoal-manager"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Like the CLI's: the terminal's Ctrl-C reaches this program, which
	// then removes the swarm in order, and not the manager directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start shoal-manager: %w", err)
	}
	b.mgr = cmd
	b.mgrExited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(b.mgrExited) }()

	// Dial once the socket exists: gRPC backs off after a failed dial.
	sock := filepath.Join(b.runDir, "shoal.sock")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-b.mgrExited:
			return fmt.Errorf("shoal-manager exited (%v) before it was ready; the end of its log:\n%s", cmd.ProcessState, tail(b.logPath, 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket %s after 30s; the end of the manager's log:\n%s", sock, tail(b.logPath, 20))
		}
	}
	b.conn, err = grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return err
	}
	b.ctl = controlv1.NewControlClient(b.conn)
	b.node = nodev1.NewNodeClient(b.conn)

	for {
		select {
		case <-b.mgrExited:
			return fmt.Errorf("shoal-manager exited (%v) before it was ready; the end of its log:\n%s", cmd.ProcessState, tail(b.logPath, 20))
		default:
		}
		if ready, version := b.ready(ctx); ready {
			b.managerVersion = version
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shoal-manager not ready after 30s; the end of its log:\n%s", tail(b.logPath, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready is the CLI's test: the node has an id and its node object is READY.
func (b *bench) ready(ctx context.Context) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := b.ctl.Info(ctx, &controlv1.InfoRequest{})
	if err != nil || info.GetNodeId() == "" {
		return false, ""
	}
	n, err := b.ctl.GetNode(ctx, &controlv1.GetNodeRequest{Ref: info.GetNodeId()})
	if err != nil {
		return false, ""
	}
	return n.GetNode().GetStatus().GetState() == typesv1.NodeState_NODE_STATE_READY, info.GetVersion()
}

func (b *bench) managerRunning() bool {
	if b.mgr == nil {
		return false
	}
	select {
	case <-b.mgrExited:
		return false
	default:
		return true
	}
}

// shoal runs the CLI against the bench's manager and returns its stdout;
// the error carries stderr.
func (b *bench) shoal(ctx context.Context, args ...string) (string, error) {
	cmd := b.shoalCmd(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("shoal %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

func (b *bench) shoalCmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, filepath.Join(b.bin, "shoal"),
		append([]string{"-H", "unix://" + filepath.Join(b.runDir, "shoal.sock")}, args...)...)
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

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
