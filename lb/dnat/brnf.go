package dnat

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Where ensureBridgeNetfilter looks; tests pass their own.
const (
	bridgeSysctlDir = "/proc/sys/net/bridge" // exists once br_netfilter is loaded
	modprobe        = "/sbin/modprobe"
)

// ensureBridgeNetfilter makes bridged IPv4 frames cross the inet
// netfilter hooks, and so conntrack and NAT: it loads br_netfilter if
// sysctlDir is missing and sets bridge-nf-call-iptables to 1. A VIP's
// remote task answers its caller directly over the overlay, a frame
// the bridge forwards without routing; only then does conntrack
// rewrite its source back to the VIP (doc.go). The setting is the
// network namespace's, and Docker sets it too.
func ensureBridgeNetfilter(sysctlDir, modprobe string) error {
	if _, err := os.Stat(sysctlDir); errors.Is(err, os.ErrNotExist) {
		out, err := exec.Command(modprobe, "br_netfilter").CombinedOutput()
		if err != nil {
			return fmt.Errorf("load br_netfilter: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	p := filepath.Join(sysctlDir, "bridge-nf-call-iptables")
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enable net.bridge.bridge-nf-call-iptables: %w", err)
	}
	return nil
}
