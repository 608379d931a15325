package cgroups

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Resources are one container's limits. Zero (or a negative value) means
// "no limit", so that Update with a zero field lifts a limit set earlier.
type Resources struct {
	CPUQuota          int64  // CFS quota in µs per period
	CPUPeriod         uint64 // CFS period in µs (100000 when quota is set and period is 0)
	MemoryLimit       int64  // bytes
	MemoryReservation int64  // bytes (soft limit: v1 memory.soft_limit_in_bytes, v2 memory.low)
	PidsLimit         int64
}

// DefaultCPUPeriod is the CFS period the kernel and Docker use when none is
// given, in µs.
const DefaultCPUPeriod uint64 = 100000

// The kernel refuses CFS quotas and periods outside these bounds (µs); we
// check them first so the error names the field instead of EINVAL.
const (
	minCPUQuota  = 1000
	minCPUPeriod = 1000
	maxCPUPeriod = 1000000
)

// ErrInvalidResources classifies Resources the kernel would refuse.
var ErrInvalidResources = errors.New("invalid resources")

// CPUs converts a compose `cpus: '0.1'` value to CFS quota/period: 0.1 →
// 10000, 100000. Zero or less means no limit and returns 0, 0.
func CPUs(cpus float64) (quota int64, period uint64) {
	if cpus <= 0 || math.IsNaN(cpus) {
		return 0, 0
	}
	// Round rather than truncate: 0.1*100000 is 10000.000000000002 in binary
	// floating point, and 0.3*100000 is 29999.999999999996.
	return int64(math.Round(cpus * float64(DefaultCPUPeriod))), DefaultCPUPeriod
}

func (r Resources) period() uint64 {
	if r.CPUPeriod == 0 {
		return DefaultCPUPeriod
	}
	return r.CPUPeriod
}

// Validate reports limits the kernel would refuse, with the field named, so
// that a user sees "cpu quota 500µs is below 1000µs" rather than EINVAL from
// a cgroup file. The error wraps ErrInvalidResources.
func (r Resources) Validate() error {
	if r.CPUQuota > 0 && r.CPUQuota < minCPUQuota {
		return fmt.Errorf("%w: cpu quota %dµs is below the kernel's minimum of %dµs", ErrInvalidResources, r.CPUQuota, minCPUQuota)
	}
	if p := r.period(); p < minCPUPeriod || p > maxCPUPeriod {
		return fmt.Errorf("%w: cpu period %dµs is outside the kernel's range %d-%dµs", ErrInvalidResources, p, minCPUPeriod, maxCPUPeriod)
	}
	if r.MemoryLimit > 0 && r.MemoryReservation > r.MemoryLimit {
		return fmt.Errorf("%w: memory reservation %d is above memory limit %d", ErrInvalidResources, r.MemoryReservation, r.MemoryLimit)
	}
	return nil
}

// Setting is one value written to one cgroup interface file.
type Setting struct {
	// Controller owns the file; on v1 it picks the hierarchy (directory).
	Controller string
	File       string
	Value      string
	// Unlimited marks the value a new cgroup already has. Writing it may be
	// skipped where the controller's file does not exist, because a missing
	// controller limits nothing either.
	Unlimited bool
}

// V1Settings returns the cgroup v1 file values for r, in the order they must
// be written (the CFS period before the quota it is measured against). Every
// limit appears, set to "unlimited" where r has none, so that applying the
// list to an existing cgroup also lifts limits.
func V1Settings(r Resources) []Setting {
	quota, quotaUnlimited := "-1", true
	if r.CPUQuota > 0 {
		quota, quotaUnlimited = strconv.FormatInt(r.CPUQuota, 10), false
	}
	return []Setting{
		{"cpu", "cpu.cfs_period_us", strconv.FormatUint(r.period(), 10), r.period() == DefaultCPUPeriod},
		{"cpu", "cpu.cfs_quota_us", quota, quotaUnlimited},
		v1Bytes("memory.limit_in_bytes", r.MemoryLimit),
		v1Bytes("memory.soft_limit_in_bytes", r.MemoryReservation),
		pidsMax(r.PidsLimit),
	}
}

func v1Bytes(file string, n int64) Setting {
	if n <= 0 {
		return Setting{"memory", file, "-1", true}
	}
	return Setting{"memory", file, strconv.FormatInt(n, 10), false}
}

// V2Settings returns the cgroup v2 (unified) file values for r. Like
// V1Settings it names every limit, "max" where r has none.
func V2Settings(r Resources) []Setting {
	p := strconv.FormatUint(r.period(), 10)
	cpuMax := Setting{"cpu", "cpu.max", "max " + p, r.period() == DefaultCPUPeriod}
	if r.CPUQuota > 0 {
		cpuMax = Setting{"cpu", "cpu.max", strconv.FormatInt(r.CPUQuota, 10) + " " + p, false}
	}
	memMax := Setting{"memory", "memory.max", "max", true}
	if r.MemoryLimit > 0 {
		memMax = Setting{"memory", "memory.max", strconv.FormatInt(r.MemoryLimit, 10), false}
	}
	// memory.low is a protection, not a cap: its "none" value is 0, not max.
	memLow := Setting{"memory", "memory.low", "0", true}
	if r.MemoryReservation > 0 {
		memLow = Setting{"memory", "memory.low", strconv.FormatInt(r.MemoryReservation, 10), false}
	}
	return []Setting{cpuMax, memMax, memLow, pidsMax(r.PidsLimit)}
}

func pidsMax(n int64) Setting {
	if n <= 0 {
		return Setting{"pids", "pids.max", "max", true}
	}
	return Setting{"pids", "pids.max", strconv.FormatInt(n, 10), false}
}

// DefaultDevices returns Docker's default device rules: deny everything,
// then allow the harmless character devices every container expects. Later
// rules override earlier ones.
func DefaultDevices() []specs.LinuxDeviceCgroup {
	char := func(major, minor int64) specs.LinuxDeviceCgroup {
		return specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "rwm"}
	}
	allMinors := int64(-1)
	pts := int64(136)
	return []specs.LinuxDeviceCgroup{
		{Allow: false, Type: "a", Access: "rwm"},
		char(1, 3), // null
		char(1, 5), // zero
		char(1, 7), // full
		char(1, 8), // random
		char(1, 9), // urandom
		char(5, 0), // tty
		char(5, 1), // console
		char(5, 2), // ptmx
		{Allow: true, Type: "c", Major: &pts, Minor: &allMinors, Access: "rwm"}, // pts/*
	}
}

// V1DeviceSettings turns device rules into writes to the v1 devices
// controller's devices.deny and devices.allow files.
func V1DeviceSettings(rules []specs.LinuxDeviceCgroup) []Setting {
	out := make([]Setting, 0, len(rules))
	for _, d := range rules {
		file := "devices.deny"
		if d.Allow {
			file = "devices.allow"
		}
		out = append(out, Setting{Controller: "devices", File: file, Value: DeviceRule(d)})
	}
	return out
}

// DeviceRule formats one rule as the v1 devices controller and its
// devices.list spell it: "c 1:3 rwm", "c 136:* rwm", or "a" for all devices.
func DeviceRule(d specs.LinuxDeviceCgroup) string {
	typ := d.Type
	if typ == "" {
		typ = "a"
	}
	if typ == "a" && d.Major == nil && d.Minor == nil {
		// "a" alone means every device with every access; devices.list
		// shows it as "a *:* rwm".
		return "a"
	}
	access := d.Access
	if access == "" {
		access = "rwm"
	}
	return fmt.Sprintf("%s %s:%s %s", typ, deviceNumber(d.Major), deviceNumber(d.Minor), access)
}

func deviceNumber(n *int64) string {
	if n == nil || *n < 0 {
		return "*"
	}
	return strconv.FormatInt(*n, 10)
}
