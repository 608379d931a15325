package testcluster

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mount is one line of /proc/self/mountinfo, reduced to what the harness
// needs.
type mount struct {
	root   string // for nsfs, "net:[INODE]"
	point  string
	fstype string
}

// readMounts reads the test process's mount table. Node programs share
// the test's mount namespace (nsenter --net enters only the network
// one), so their mounts are in it.
func readMounts() ([]mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 {
			continue
		}
		out = append(out, mount{root: unescape(f[3]), point: unescape(f[4]), fstype: g[0]})
	}
	return out, nil
}

// unescape undoes the octal escapes (\040 for a space) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// under reports whether path is one of dirs or inside one.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// mountsUnder lists the mount points at or under dirs, deepest first,
// which is the order to unmount them in.
func mountsUnder(dirs []string) ([]mount, error) {
	all, err := readMounts()
	if err != nil {
		return nil, err
	}
	var out []mount
	for _, m := range all {
		if under(m.point, dirs) {
			out = append(out, m)
		}
	}
	// Later lines are mounted later, over earlier ones: reverse, then
	// sort deeper paths first, keeping that order among equals.
	slices.Reverse(out)
	slices.SortStableFunc(out, func(a, b mount) int {
		return strings.Count(b.point, "/") - strings.Count(a.point, "/")
	})
	return out, nil
}

// netnsPinnedUnder returns the inodes of the network namespaces pinned
// at mount points under dirs: a node's runtime pins its containers'
// namespaces in its run or data dir.
func netnsPinnedUnder(dirs []string) map[uint64]bool {
	out := map[uint64]bool{}
	ms, _ := mountsUnder(dirs)
	for _, m := range ms {
		if m.fstype != "nsfs" || !strings.HasPrefix(m.root, "net:[") {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(m.root, "net:["), "]"), 10, 64); err == nil {
			out[ino] = true
		}
	}
	return out
}

// unmountUnder detaches every mount at or under dirs. Mounts stacked on
// one point take a round each, so it goes again while some are left.
func unmountUnder(dirs []string) error {
	for round := 0; ; round++ {
		ms, err := mountsUnder(dirs)
		if err != nil || len(ms) == 0 {
			return err
		}
		if round == 8 {
			var left []string
			for _, m := range ms {
				left = append(left, m.point)
			}
			return fmt.Errorf("mounts left after %d rounds of unmounting: %s", round, strings.Join(left, ", "))
		}
		for _, m := range ms {
			if err := unix.Unmount(m.point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("unmount %s: %w", m.point, err)
			}
		}
	}
}
