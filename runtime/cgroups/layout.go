package cgroups

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
)

// hierarchy is one mounted cgroup tree.
type hierarchy struct {
	// controllers mounted together here ("cpu", or "cpu", "cpuacct" on a
	// combined mount; "name=systemd" for the named one); nil for cgroup2.
	controllers []string
	mount       string
	unified     bool
	required    bool
}

func (h hierarchy) name() string {
	if h.unified {
		return "unified"
	}
	return strings.Join(h.controllers, ",")
}

func (h hierarchy) has(controller string) bool {
	return slices.Contains(h.controllers, controller)
}

// layout is where this host mounts the cgroup hierarchies shoal uses.
type layout struct {
	mode        string      // "v1", "hybrid" or "v2"
	hierarchies []hierarchy // v1: one per mount, then the cgroup2 one if any; v2: just the cgroup2 one
}

// v1Required are the controllers a container needs on a v1 host: limits
// (cpu, memory, pids), accounting (cpuacct), device isolation (devices) and
// the cpuset that a process cannot join without.
var v1Required = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "devices"}

// v1Optional hierarchies are used when mounted: freezer makes Kill race-free
// against forks, blkio gives io accounting, and name=systemd (like the
// cgroup2 mount in hybrid mode) is where systemd tracks its units' processes;
// moving containers out of the agent's unit there keeps `systemctl restart
// shoal-agent` from killing them, as runc does.
var v1Optional = []string{"freezer", "blkio", "name=systemd"}

// v2Controllers are enabled in the parents' cgroup.subtree_control so that
// their files appear in each container's cgroup.
var v2Controllers = []string{"cpu", "io", "memory", "pids"}

// hostLayout is read once; it is a variable so that tests can run the v2
// code against the cgroup2 mount of a hybrid host.
var hostLayout = sync.OnceValues(func() (*layout, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
})

// parseMountinfo finds the cgroup mounts in /proc/self/mountinfo. It goes by
// each mount's super options rather than by directory names, because hosts
// differ: cpu and cpuacct may be one mount ("cpu,cpuacct" with symlinks) or
// two, and cgroup2 may be at the root or under "unified".
func parseMountinfo(r io.Reader) (*layout, error) {
	var (
		seen    = map[string]bool{} // controllers found
		order   []string            // mount points in mountinfo order
		byMount = map[string]*hierarchy{}
		unified string
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - cgroup cgroup rw,cpu,cpuacct
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		mount, fstype, super := unescapeMount(fields[4]), fields[sep+1], fields[sep+3]
		switch fstype {
		case "cgroup2":
			if unified == "" {
				unified = mount
			}
		case "cgroup":
			for _, opt := range strings.Split(super, ",") {
				if !slices.Contains(v1Required, opt) && !slices.Contains(v1Optional, opt) {
					continue
				}
				if seen[opt] {
					continue // a bind mount of a hierarchy already found
				}
				h := byMount[mount]
				if h == nil {
					h = &hierarchy{mount: mount}
					byMount[mount] = h
					order = append(order, mount)
				}
				h.controllers = append(h.controllers, opt)
				h.required = h.required || slices.Contains(v1Required, opt)
				seen[opt] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroups: read mountinfo: %w", err)
	}

	if !seen["memory"] {
		if unified == "" {
			return nil, fmt.Errorf("cgroups: no cgroup hierarchy is mounted")
		}
		return &layout{mode: "v2", hierarchies: []hierarchy{{mount: unified, unified: true, required: true}}}, nil
	}
	l := &layout{mode: "v1"}
	var missing []string
	for _, c := range v1Required {
		if !seen[c] {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cgroups: v1 controllers %s are not mounted", strings.Join(missing, ", "))
	}
	for _, m := range order {
		l.hierarchies = append(l.hierarchies, *byMount[m])
	}
	if unified != "" {
		l.mode = "hybrid"
		l.hierarchies = append(l.hierarchies, hierarchy{mount: unified, unified: true})
	}
	return l, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				c = c*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mode reports "v1", "hybrid" or "v2" for this host, or "" when no usable
// cgroup hierarchy is mounted.
func Mode() string {
	l, err := hostLayout()
	if err != nil {
		return ""
	}
	return l.mode
}
