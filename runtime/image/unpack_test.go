package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCleanPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a/b", "a/b"},
		{"./a/b/", "a/b"},
		{"/etc/passwd", "etc/passwd"},
		{"//x/./y/../z", "x/z"},
		{".", ""},
		{"/", ""},
		{"a/..", ""},
		{"..", "!"},
		{"../x", "!"},
		{"a/../../x", "!"},
		{"/../x", "!"},
	} {
		got, err := cleanPath(tc.in)
		if tc.want == "!" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.in) {
				t.Errorf("cleanPath(%q) = %q, %v; want ErrInvalid naming the path", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestUnpackSemantics covers how entries of one layer interact: later
// entries replace earlier ones, and whiteouts only hide lower layers.
func TestUnpackSemantics(t *testing.T) {
	requiresRoot(t)
	isWhiteout := func(p string) bool {
		var st unix.Stat_t
		return unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
	}
	isOpaque := func(p string) bool {
		buf := make([]byte, 4)
		n, err := unix.Lgetxattr(p, overlayOpaque, buf)
		return err == nil && string(buf[:n]) == "y"
	}
	for _, tc := range []struct {
		name  string
		ents  []ent
		check func(t *testing.T, root string)
	}{
		{"whiteout of a name the layer itself ships is dropped", []ent{file("f", "mine"), whiteout("f")},
			func(t *testing.T, root string) {
				if got := readFile(t, filepath.Join(root, "f")); got != "mine" {
					t.Errorf("f = %q, want the layer's own file", got)
				}
			}},
		{"whiteout then a new dir makes it opaque", []ent{whiteout("d"), dir("d/"), file("d/new", "n")},
			func(t *testing.T, root string) {
				if isWhiteout(filepath.Join(root, "d")) || !isOpaque(filepath.Join(root, "d")) {
					t.Errorf("d should be an opaque directory")
				}
			}},
		{"whiteout then a file replaces it", []ent{whiteout("f"), file("f", "new")},
			func(t *testing.T, root string) {
				if got := readFile(t, filepath.Join(root, "f")); got != "new" {
					t.Errorf("f = %q", got)
				}
			}},
		{"whiteout in a dir not listed", []ent{whiteout("a/b/gone")},
			func(t *testing.T, root string) {
				if !isWhiteout(filepath.Join(root, "a/b/gone")) {
					t.Errorf("a/b/gone is not a whiteout")
				}
			}},
		{"aufs metadata is skipped", []ent{dir(".wh..wh.plnk/"), file(".wh..wh.plnk/123.456", "x"), file("x/.wh..wh.aufs", "")},
			func(t *testing.T, root string) {
				assertMissing(t, filepath.Join(root, ".wh..wh.plnk"))
				assertMissing(t, filepath.Join(root, "x/.wh..wh.aufs"))
			}},
		{"file replaced by dir", []ent{file("p", "file"), dir("p/"), file("p/child", "c")},
			func(t *testing.T, root string) {
				if got := readFile(t, filepath.Join(root, "p/child")); got != "c" {
					t.Errorf("p/child = %q", got)
				}
			}},
		{"dir replaced by file", []ent{dir("p/"), file("p/child", "c"), file("p", "file")},
			func(t *testing.T, root string) {
				if got := readFile(t, filepath.Join(root, "p")); got != "file" {
					t.Errorf("p = %q", got)
				}
			}},
		{"symlink replaced by dir is not followed", []ent{symlink("s", "/"), dir("s/"), file("s/in", "in")},
			func(t *testing.T, root string) {
				if fi, err := os.Lstat(filepath.Join(root, "s")); err != nil || !fi.IsDir() {
					t.Errorf("s is not a real dir: %v", err)
				}
			}},
		{"hardlink to a symlink links the symlink", []ent{symlink("l", "/etc/shadow"), hardlink("h", "l")},
			func(t *testing.T, root string) {
				if target, err := os.Readlink(filepath.Join(root, "h")); err != nil || target != "/etc/shadow" {
					t.Errorf("h -> %q, %v", target, err)
				}
			}},
		{"hardlink to itself", []ent{file("f", "x"), hardlink("f", "f")},
			func(t *testing.T, root string) {
				if got := readFile(t, filepath.Join(root, "f")); got != "x" {
					t.Errorf("f = %q", got)
				}
			}},
		{"root entry is ignored", []ent{dir("./"), dir("/"), file("./x", "x")},
			func(t *testing.T, root string) {
				if got := readFile(t, filepath.Join(root, "x")); got != "x" {
					t.Errorf("x = %q", got)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := unpack(bytes.NewReader(mkTar(t, tc.ents...)), root); err != nil {
				t.Fatalf("unpack: %v", err)
			}
			tc.check(t, root)
		})
	}
}

func TestUnpackRejectsBadWhiteout(t *testing.T) {
	requiresRoot(t)
	for _, name := range []string{".wh.", "d/.wh..."} {
		err := unpack(bytes.NewReader(mkTar(t, file(name, ""))), t.TempDir())
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("unpack(%q) = %v, want ErrInvalid", name, err)
		}
	}
}
