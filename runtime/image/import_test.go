package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rootfsTar is a rootfs with every kind of entry and metadata Import must
// keep.
func rootfsTar(t *testing.T) []byte {
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	tool := file("bin/tool", "#!/bin/sh\n")
	tool.mode, tool.uid, tool.gid, tool.mtime = 0o4755, 1000, 2000, old
	tool.xattrs = map[string]string{"user.shoal": "yes", "trusted.overlay.redirect": "/evil"}
	bin := dir("bin/")
	bin.mtime = old
	null := ent{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666}
	fifo := ent{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600}
	sticky := dir("tmp/")
	sticky.mode = 0o1777
	return mkTar(t,
		dir("./"), bin, tool,
		symlink("bin/sh", "tool"),
		hardlink("bin/hard", "bin/tool"),
		symlink("etc", "/host-looking/absolute"), // dangling is fine: it resolves inside a container
		null, fifo, sticky,
		file("/abs.txt", "absolute names are relative to the layer"),
		file("deep/er/file", "parents were never listed"),
	)
}

func TestImport(t *testing.T) {
	requiresRoot(t)
	plain := rootfsTar(t)
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"plain tar", plain},
		{"gzip tar", gz(t, plain)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			cfg := &Config{
				Env:          []string{"A=1"},
				Entrypoint:   []string{"/bin/tool"},
				Cmd:          []string{"--help"},
				WorkingDir:   "/srv",
				User:         "1000:2000",
				ExposedPorts: []string{"8080", "53/udp"},
				StopSignal:   "SIGQUIT",
				Labels:       map[string]string{"k": "v"},
			}
			img := mustImport(t, s, tc.input, "example/imported:v1", cfg)

			if img.DiffIDs[0] != digestOf(plain).String() {
				t.Errorf("DiffID = %s, want sha256 of the uncompressed tar %s", img.DiffIDs[0], digestOf(plain))
			}
			if img.Size != int64(len(plain)) {
				t.Errorf("Size = %d, want %d", img.Size, len(plain))
			}
			if !img.Created.Equal(testTime.Add(time.Second)) {
				t.Errorf("Created = %v, want the store clock's %v", img.Created, testTime.Add(time.Second))
			}
			want := *cfg
			want.ExposedPorts = []string{"53/udp", "8080/tcp"}
			if !reflect.DeepEqual(img.Config, want) {
				t.Errorf("Config = %+v\nwant %+v", img.Config, want)
			}
			if !slices.Equal(img.RepoTags, []string{"example/imported:v1"}) {
				t.Errorf("RepoTags = %v", img.RepoTags)
			}

			root := mustLayerDirs(t, s, img)[0]
			var st unix.Stat_t
			lstat := func(p string) *unix.Stat_t {
				t.Helper()
				if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
					t.Fatalf("lstat %s: %v", p, err)
				}
				return &st
			}
			if s := lstat("bin/tool"); s.Mode&0o7777 != 0o4755 || s.Uid != 1000 || s.Gid != 2000 {
				t.Errorf("bin/tool mode %o uid %d gid %d, want setuid 4755 1000:2000", s.Mode&0o7777, s.Uid, s.Gid)
			}
			toolIno := st.Ino
			if s := lstat("bin/tool"); s.Mtim.Sec != time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC).Unix() {
				t.Errorf("bin/tool mtime = %d", s.Mtim.Sec)
			}
			if s := lstat("bin"); s.Mtim.Sec != time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC).Unix() {
				t.Errorf("bin/ mtime = %d: directory times must be set after their children", s.Mtim.Sec)
			}
			if s := lstat("bin/hard"); s.Ino != toolIno {
				t.Errorf("bin/hard is not a hardlink of bin/tool")
			}
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(filepath.Join(root, "bin/tool"), "user.shoal", buf); err != nil || string(buf[:n]) != "yes" {
				t.Errorf("xattr user.shoal = %q, %v", buf[:n], err)
			}
			if _, err := unix.Lgetxattr(filepath.Join(root, "bin/tool"), "trusted.overlay.redirect", buf); !errors.Is(err, unix.ENODATA) {
				t.Errorf("trusted.overlay.redirect from the archive was applied (err %v); overlayfs would act on it", err)
			}
			for p, target := range map[string]string{"bin/sh": "tool", "etc": "/host-looking/absolute"} {
				n, err := unix.Readlink(filepath.Join(root, p), buf)
				if err != nil || string(buf[:n]) != target {
					t.Errorf("%s -> %q, %v; want %q", p, buf[:n], err, target)
				}
			}
			if s := lstat("dev/null"); s.Mode&unix.S_IFMT != unix.S_IFCHR || s.Rdev != unix.Mkdev(1, 3) || s.Mode&0o777 != 0o666 {
				t.Errorf("dev/null mode %o rdev %x, want char 1:3 0666", s.Mode, s.Rdev)
			}
			if s := lstat("run/fifo"); s.Mode&unix.S_IFMT != unix.S_IFIFO {
				t.Errorf("run/fifo mode %o, want a fifo", s.Mode)
			}
			if s := lstat("tmp"); s.Mode&0o7777 != 0o1777 {
				t.Errorf("tmp mode %o, want 1777", s.Mode&0o7777)
			}
			if got := readFile(t, filepath.Join(root, "abs.txt")); !strings.HasPrefix(got, "absolute") {
				t.Errorf("abs.txt = %q", got)
			}
			if s := lstat("deep/er"); s.Mode&0o777 != 0o755 {
				t.Errorf("implicit parent deep/er mode %o, want 755", s.Mode&0o777)
			}
		})
	}
}

func TestImportUntaggedAndNilConfig(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	img := mustImport(t, s, mkTar(t, file("x", "x")), "", nil)
	if len(img.RepoTags) != 0 {
		t.Errorf("RepoTags = %v, want none", img.RepoTags)
	}
	if !reflect.DeepEqual(img.Config, Config{}) {
		t.Errorf("Config = %+v, want empty", img.Config)
	}
	// Importing the same tarball again shares the layer dir.
	img2 := mustImport(t, s, mkTar(t, file("x", "x")), "again", nil)
	if img2.ID == img.ID {
		t.Errorf("two imports got one ID; their configs differ by Created")
	}
	if d1, d2 := mustLayerDirs(t, s, img), mustLayerDirs(t, s, img2); d1[0] != d2[0] {
		t.Errorf("same rootfs unpacked twice: %s, %s", d1[0], d2[0])
	}
	if n := len(dirNames(t, s.layerDir())); n != 1 {
		t.Errorf("layers/ holds %d dirs, want 1", n)
	}
}

func TestImportRejects(t *testing.T) {
	requiresRoot(t)
	for _, tc := range []struct {
		name    string
		input   []byte
		ref     string
		wantErr string
	}{
		{"not a tar", []byte("hello, this is not a tar archive at all"), "x", "import: not a tar archive"},
		{"empty input", nil, "x", "import: not a tar archive"},
		{"gzip of junk", gz(t, bytes.Repeat([]byte("junk"), 200)), "x", "import: not a tar archive"},
		{"escape", mkTar(t, file("../../escape", "x")), "x", `"../../escape" escapes the layer root`},
		{"bad ref", mkTar(t, file("x", "x")), "Not/Valid", "invalid reference format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			before := takeSnapshot(t, s)
			_, err := s.Import(bytes.NewReader(tc.input), tc.ref, nil)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Import error = %v, want ErrInvalid containing %q", err, tc.wantErr)
			}
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Errorf("failed Import changed the store:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}
