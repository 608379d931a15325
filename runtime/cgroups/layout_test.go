package cgroups

import (
	"slices"
	"strings"
	"testing"

	cgroupsv3 "github.com/containerd/cgroups/v3"
)

// This CI machine: every v1 controller on its own mount, cpu and cpuacct
// apart, and a cgroup2 mount with no controllers.
const mountinfoSeparate = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// systemd's hybrid layout (Ubuntu 20.04): cpu and cpuacct share a mount,
// optional fields before the separator, a bind mount of memory elsewhere.
const mountinfoCombined = `25 24 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
34 25 0:31 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,devices
35 25 0:32 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,cpuset,clone_children
36 25 0:33 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:21 - cgroup cgroup rw,freezer
37 25 0:34 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:22 - cgroup cgroup rw,blkio
90 80 0:29 / /var/lib/x/memory rw - cgroup cgroup rw,memory
`

const mountinfoV2 = `24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

// CentOS 7: v1 only, mount points with an escaped space for good measure.
const mountinfoLegacy = `20 19 0:17 / /cg\040root/cpu,cpuacct rw - cgroup cgroup rw,cpuacct,cpu
21 19 0:18 / /cg\040root/memory rw - cgroup cgroup rw,memory
22 19 0:19 / /cg\040root/cpuset rw - cgroup cgroup rw,cpuset
23 19 0:20 / /cg\040root/pids rw - cgroup cgroup rw,pids
24 19 0:21 / /cg\040root/devices rw - cgroup cgroup rw,devices
`

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mountinfo string
		mode      string
		want      []string // hierarchy@mount, "!" marking the required ones
		err       string
	}{{
		name: "separate cpu and cpuacct", mountinfo: mountinfoSeparate, mode: "hybrid",
		want: []string{
			"!cpu@/sys/fs/cgroup/cpu", "!cpuacct@/sys/fs/cgroup/cpuacct", "!cpuset@/sys/fs/cgroup/cpuset",
			"!memory@/sys/fs/cgroup/memory", "!devices@/sys/fs/cgroup/devices", "freezer@/sys/fs/cgroup/freezer",
			"blkio@/sys/fs/cgroup/blkio", "!pids@/sys/fs/cgroup/pids", "name=systemd@/sys/fs/cgroup/systemd",
			"unified@/sys/fs/cgroup/unified",
		},
	}, {
		name: "combined cpu,cpuacct", mountinfo: mountinfoCombined, mode: "hybrid",
		want: []string{
			"name=systemd@/sys/fs/cgroup/systemd", "!cpu,cpuacct@/sys/fs/cgroup/cpu,cpuacct",
			"!memory@/sys/fs/cgroup/memory", "!pids@/sys/fs/cgroup/pids", "!devices@/sys/fs/cgroup/devices",
			"!cpuset@/sys/fs/cgroup/cpuset", "freezer@/sys/fs/cgroup/freezer", "blkio@/sys/fs/cgroup/blkio",
			"unified@/sys/fs/cgroup/unified",
		},
	}, {
		name: "pure v2", mountinfo: mountinfoV2, mode: "v2",
		want: []string{"!unified@/sys/fs/cgroup"},
	}, {
		name: "legacy v1", mountinfo: mountinfoLegacy, mode: "v1",
		want: []string{
			"!cpuacct,cpu@/cg root/cpu,cpuacct", "!memory@/cg root/memory", "!cpuset@/cg root/cpuset",
			"!pids@/cg root/pids", "!devices@/cg root/devices",
		},
	}, {
		name:      "v1 without pids",
		mountinfo: strings.ReplaceAll(mountinfoSeparate, "rw,pids", "rw,rdma"),
		err:       "v1 controllers pids are not mounted",
	}, {
		name:      "no cgroups",
		mountinfo: "24 30 0:22 / /sys rw - sysfs sysfs rw\n",
		err:       "no cgroup hierarchy is mounted",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := parseMountinfo(strings.NewReader(tc.mountinfo))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseMountinfo: err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.mode != tc.mode {
				t.Errorf("mode = %q, want %q", l.mode, tc.mode)
			}
			var got []string
			for _, h := range l.hierarchies {
				s := h.name() + "@" + h.mount
				if h.required {
					s = "!" + s
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("hierarchies\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestModeOfThisHost(t *testing.T) {
	// containerd's own detection (statfs of /sys/fs/cgroup and of its
	// "unified" child) is the independent opinion.
	want := map[cgroupsv3.CGMode]string{
		cgroupsv3.Legacy:  "v1",
		cgroupsv3.Hybrid:  "hybrid",
		cgroupsv3.Unified: "v2",
	}[cgroupsv3.Mode()]
	if want == "" {
		t.Skip("no cgroups here")
	}
	if got := Mode(); got != want {
		t.Errorf("Mode() = %q, containerd says %q", got, want)
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		parent, id string
		ok         bool
	}{
		{"shoal", "abc", true},
		{"shoal/node-1", "abc", true},
		{"shoal", "", false},
		{"shoal", "a/b", false},
		{"shoal", "..", false},
		{"", "abc", false},
		{"/shoal", "abc", false},
		{"shoal/../x", "abc", false},
		{"shoal/", "abc", false},
		{".", "abc", false},
	} {
		if err := checkName(tc.parent, tc.id); (err == nil) != tc.ok {
			t.Errorf("checkName(%q, %q) = %v, want ok=%v", tc.parent, tc.id, err, tc.ok)
		}
	}
}
