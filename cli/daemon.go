package cli

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// DaemonStarter starts shoal-manager in the background for `swarm init`
// and `swarm join`. It is an interface so that tests check the flags passed
// and the text printed without starting a daemon.
type DaemonStarter interface {
	// StartManager starts shoal-manager with args, detached from the CLI,
	// its stdout and stderr appended to logPath. The returned channel
	// yields once if the process exits (with its wait error, nil for a
	// clean exit), which a healthy manager never does.
	StartManager(args []string, logPath string) (exited <-chan error, err error)
}

// ManagerBinary is the daemon's program name.
const ManagerBinary = "shoal-manager"

// ExecStarter starts the real shoal-manager binary: the one beside the
// running shoal binary (so a bin/ directory works without installing),
// else the first on $PATH.
type ExecStarter struct{}

// StartManager implements DaemonStarter.
func (ExecStarter) StartManager(args []string, logPath string) (<-chan error, error) {
	bin, err := findManagerBinary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(logPath), err)
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open manager log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = logf
	cmd.Stderr = logf
	// A session of its own: the manager outlives this shell and does not
	// get the terminal's SIGINT/SIGHUP.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	return exited, nil
}

func findManagerBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), ManagerBinary)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(ManagerBinary)
	if err != nil {
		return "", fmt.Errorf("%s not found beside the shoal binary nor in $PATH", ManagerBinary)
	}
	return p, nil
}

// tailFile returns up to n last lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return ""
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
