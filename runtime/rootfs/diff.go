// Package rootfs knows the layout of a container's overlay root filesystem
// on the host side: which directories it needs and what the container has
// changed compared with its image (`docker diff`).
package rootfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// Kind is the kind of a change, as `docker diff` prints it.
type Kind string

// Change kinds.
const (
	Added   Kind = "A"
	Changed Kind = "C"
	Deleted Kind = "D"
)

// Change is one path the container changed.
type Change struct {
	Kind Kind
	Path string
}

// Diff lists the changes recorded in an overlayfs upper directory against
// the lower layers (lowest first): a whiteout is a deletion, a path present
// in a lower layer is a change, anything else an addition. Parent
// directories of changes are reported as changed, as Docker does.
func Diff(upper string, lowers []string) ([]Change, error) {
	var out []Change
	inLower := func(rel string) bool {
		for _, l := range lowers {
			if _, err := os.Lstat(filepath.Join(l, rel)); err == nil {
				return true
			}
		}
		return false
	}
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		if rel == "." {
			return nil
		}
		path := "/" + rel
		info, err := d.Info()
		if err != nil {
			return err
		}
		if isWhiteout(info) {
			out = append(out, Change{Deleted, path})
			return nil
		}
		if inLower(rel) {
			out = append(out, Change{Changed, path})
		} else {
			out = append(out, Change{Added, path})
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func isWhiteout(fi os.FileInfo) bool {
	if fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}
