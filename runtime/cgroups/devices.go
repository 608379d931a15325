package cgroups

import (
	"fmt"
	"slices"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setDevicesV2 attaches an eBPF program that enforces rules to the cgroup
// dir: cgroup v2 has no devices files. The kernel keeps the program attached
// for the cgroup's life, so nothing here needs to stay open.
func setDevicesV2(dir string, rules []specs.LinuxDeviceCgroup) error {
	// The library dereferences Major and Minor, and spells "any" -1 where
	// the runtime spec also allows nil.
	wildcard := int64(-1)
	rules = slices.Clone(rules)
	for i := range rules {
		if rules[i].Major == nil {
			rules[i].Major = &wildcard
		}
		if rules[i].Minor == nil {
			rules[i].Minor = &wildcard
		}
	}
	insts, license, err := cgroup2.DeviceFilter(rules)
	if err != nil {
		return fmt.Errorf("device filter: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if _, err := cgroup2.LoadAttachCgroupDeviceFilter(insts, license, fd); err != nil {
		return fmt.Errorf("device filter on %s: %w", dir, err)
	}
	return nil
}
