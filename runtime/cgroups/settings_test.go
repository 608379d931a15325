package cgroups

import (
	"errors"
	"math"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCPUs(t *testing.T) {
	for _, tc := range []struct {
		cpus   float64
		quota  int64
		period uint64
	}{
		{0.1, 10000, 100000},
		{0.3, 30000, 100000}, // 29999.999… in floating point
		{0.5, 50000, 100000},
		{1.5, 150000, 100000},
		{2, 200000, 100000},
		{0.01, 1000, 100000},
		{0, 0, 0},
		{-1, 0, 0},
		{math.NaN(), 0, 0},
	} {
		q, p := CPUs(tc.cpus)
		if q != tc.quota || p != tc.period {
			t.Errorf("CPUs(%v) = %d, %d; want %d, %d", tc.cpus, q, p, tc.quota, tc.period)
		}
	}
}

func TestV1Settings(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Resources
		want []Setting
	}{{
		name: "no limits",
		want: []Setting{
			{"cpu", "cpu.cfs_period_us", "100000", true},
			{"cpu", "cpu.cfs_quota_us", "-1", true},
			{"memory", "memory.limit_in_bytes", "-1", true},
			{"memory", "memory.soft_limit_in_bytes", "-1", true},
			{"pids", "pids.max", "max", true},
		},
	}, {
		name: "all limits",
		r:    Resources{CPUQuota: 10000, MemoryLimit: 64 << 20, MemoryReservation: 32 << 20, PidsLimit: 100},
		want: []Setting{
			{"cpu", "cpu.cfs_period_us", "100000", true},
			{"cpu", "cpu.cfs_quota_us", "10000", false},
			{"memory", "memory.limit_in_bytes", "67108864", false},
			{"memory", "memory.soft_limit_in_bytes", "33554432", false},
			{"pids", "pids.max", "100", false},
		},
	}, {
		name: "own period, negative means none",
		r:    Resources{CPUQuota: 25000, CPUPeriod: 50000, MemoryLimit: -1, PidsLimit: -1},
		want: []Setting{
			{"cpu", "cpu.cfs_period_us", "50000", false},
			{"cpu", "cpu.cfs_quota_us", "25000", false},
			{"memory", "memory.limit_in_bytes", "-1", true},
			{"memory", "memory.soft_limit_in_bytes", "-1", true},
			{"pids", "pids.max", "max", true},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := V1Settings(tc.r); !slices.Equal(got, tc.want) {
				t.Errorf("V1Settings(%+v)\n got %v\nwant %v", tc.r, got, tc.want)
			}
		})
	}
}

func TestV2Settings(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Resources
		want []Setting
	}{{
		name: "no limits",
		want: []Setting{
			{"cpu", "cpu.max", "max 100000", true},
			{"memory", "memory.max", "max", true},
			{"memory", "memory.low", "0", true},
			{"pids", "pids.max", "max", true},
		},
	}, {
		name: "cpus 0.1",
		r:    Resources{CPUQuota: 10000, CPUPeriod: 100000},
		want: []Setting{
			{"cpu", "cpu.max", "10000 100000", false},
			{"memory", "memory.max", "max", true},
			{"memory", "memory.low", "0", true},
			{"pids", "pids.max", "max", true},
		},
	}, {
		name: "all limits",
		r:    Resources{CPUQuota: 150000, MemoryLimit: 512 << 20, MemoryReservation: 128 << 20, PidsLimit: 64},
		want: []Setting{
			{"cpu", "cpu.max", "150000 100000", false},
			{"memory", "memory.max", "536870912", false},
			{"memory", "memory.low", "134217728", false},
			{"pids", "pids.max", "64", false},
		},
	}, {
		name: "period without quota",
		r:    Resources{CPUPeriod: 20000},
		want: []Setting{
			{"cpu", "cpu.max", "max 20000", false},
			{"memory", "memory.max", "max", true},
			{"memory", "memory.low", "0", true},
			{"pids", "pids.max", "max", true},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if got := V2Settings(tc.r); !slices.Equal(got, tc.want) {
				t.Errorf("V2Settings(%+v)\n got %v\nwant %v", tc.r, got, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Resources
		ok   bool
	}{
		{"zero", Resources{}, true},
		{"cpus 0.01", Resources{CPUQuota: 1000}, true},
		{"quota below 1ms", Resources{CPUQuota: 999}, false},
		{"period too short", Resources{CPUQuota: 10000, CPUPeriod: 999}, false},
		{"period too long", Resources{CPUQuota: 10000, CPUPeriod: 1000001}, false},
		{"reservation above limit", Resources{MemoryLimit: 10 << 20, MemoryReservation: 20 << 20}, false},
		{"reservation without limit", Resources{MemoryReservation: 20 << 20}, true},
	} {
		err := tc.r.Validate()
		if tc.ok && err != nil {
			t.Errorf("%s: Validate() = %v, want nil", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, ErrInvalidResources) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidResources", tc.name, err)
		}
	}
}

func TestV1DeviceSettings(t *testing.T) {
	want := []Setting{
		{Controller: "devices", File: "devices.deny", Value: "a"},
		{Controller: "devices", File: "devices.allow", Value: "c 1:3 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 1:5 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 1:7 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 1:8 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 1:9 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 5:0 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 5:1 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 5:2 rwm"},
		{Controller: "devices", File: "devices.allow", Value: "c 136:* rwm"},
	}
	if got := V1DeviceSettings(DefaultDevices()); !slices.Equal(got, want) {
		t.Errorf("V1DeviceSettings(DefaultDevices())\n got %v\nwant %v", got, want)
	}
	major := int64(8)
	if got := DeviceRule(specs.LinuxDeviceCgroup{Type: "b", Major: &major, Access: "r"}); got != "b 8:* r" {
		t.Errorf("DeviceRule(b 8 r) = %q", got)
	}
}
