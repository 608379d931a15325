package testutil

// Finding and removing the cgroups a test or benchmark run made, in every
// hierarchy (cgroup v1 controllers and the v2 mount beside them).

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// CgroupMounts lists the mount points of cgroup v1 and v2 hierarchies.
func CgroupMounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		if !seen[f[4]] {
			seen[f[4]] = true
			out = append(out, f[4])
		}
	}
	return out
}

// CgroupDirsNamed lists the top-level cgroup called name in every
// hierarchy where it exists.
func CgroupDirsNamed(name string) []string {
	var out []string
	for _, m := range CgroupMounts() {
		p := filepath.Join(m, name)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			out = append(out, p)
		}
	}
	return out
}

// CgroupDirsContaining lists every cgroup, at any depth, whose name
// contains sub (the outermost of nested matches).
func CgroupDirsContaining(sub string) []string {
	var out []string
	for _, m := range CgroupMounts() {
		_ = filepath.WalkDir(m, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // a cgroup removed during the walk
			}
			if d.IsDir() && p != m && strings.Contains(d.Name(), sub) {
				out = append(out, p)
				return filepath.SkipDir
			}
			return nil
		})
	}
	return out
}

// RemoveCgroupTree removes a cgroup directory and the cgroups below it,
// deepest first; cgroupfs directories are removed with rmdir, never
// unlinked file by file. A missing root is not an error.
func RemoveCgroupTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range slices.Backward(dirs) {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
