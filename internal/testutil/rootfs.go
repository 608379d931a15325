package testutil

import (
	"archive/tar"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// HelperPkg is the import path of the helper program in test images.
const HelperPkg = "github.com/shoal-dev/shoal/internal/testhelper"

// Users and groups of the helper image, for tests that run as them.
const (
	AppUID   = 1000 // user app, home /home/app, also in group staff
	AppGID   = 1000
	StaffGID = 50
	NobodyID = 65534 // user nobody, group nogroup
)

// imageTime is the mtime of every file of the helper image, so that two
// builds of it are byte-identical apart from the helper binary.
var imageTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type tarEntry struct {
	hdr     tar.Header
	content string // for regular files other than the helper
	src     string // file on the host to copy, for the helper binary
}

// HelperRootfs writes the helper image's rootfs as an uncompressed tarball
// into t.TempDir() and returns its path. It holds /bin/helper (the helper
// program, see internal/testhelper) with a symlink /bin/CMD → helper for
// each subcommand (/bin/true exits 0, /bin/sleep sleeps, …, /bin/sh runs
// `sh -c 'CMD ARGS'` without any shell syntax); the directories /proc,
// /dev, /sys, /tmp (1777), /root, /home/app (owned by app), /data with
// /data/seed.txt ("from-image\n", to see a new volume filled from the
// image) and /var/empty; /etc/passwd (root 0, app 1000, nobody 65534),
// /etc/group (root 0, staff 50 with member app, app 1000, nogroup 65534)
// and /etc/hostname ("image"). extra adds or replaces regular files, path
// → content, mode 0644, creating missing parent directories.
func HelperRootfs(t testing.TB, extra map[string]string) string {
	t.Helper()
	helper := GoBuild(t, HelperPkg)
	names, err := helperCommands(helper)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]tarEntry{}
	dir := func(name string, mode int64, uid int) {
		entries[name] = tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid}}
	}
	file := func(name, content string) {
		entries[name] = tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content))}, content: content}
	}
	for _, d := range []string{"bin", "dev", "etc", "home", "data", "var", "var/empty"} {
		dir(d, 0o755, 0)
	}
	dir("proc", 0o555, 0)
	dir("sys", 0o555, 0)
	dir("tmp", 0o1777, 0)
	dir("root", 0o700, 0)
	dir("home/app", 0o755, AppUID)
	fi, err := os.Stat(helper)
	if err != nil {
		t.Fatal(err)
	}
	entries["bin/helper"] = tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/helper", Mode: 0o755, Size: fi.Size()}, src: helper}
	for _, name := range names {
		entries["bin/"+name] = tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + name, Linkname: "helper", Mode: 0o777}}
	}
	file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"+
		"app:x:1000:1000:app:/home/app:/bin/sh\n"+
		"nobody:x:65534:65534:nobody:/var/empty:/bin/false\n")
	file("etc/group", "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n")
	file("etc/hostname", "image\n")
	file("data/seed.txt", "from-image\n")
	for p, content := range extra {
		name := strings.TrimPrefix(path.Clean("/"+p), "/")
		if name == "" {
			t.Fatalf("HelperRootfs: extra file %q is the root", p)
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				dir(d, 0o755, 0)
			}
		}
		file(name, content)
	}

	out := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := writeTar(out, entries); err != nil {
		t.Fatal(err)
	}
	return out
}

var helperNames struct {
	once  sync.Once
	names []string
	err   error
}

func helperCommands(helper string) ([]string, error) {
	helperNames.once.Do(func() {
		// The helper knows its subcommands; asking it keeps one list.
		out, err := exec.Command(helper, "_commands").Output()
		if err != nil {
			helperNames.err = fmt.Errorf("%s _commands: %w", helper, err)
			return
		}
		helperNames.names = strings.Fields(string(out))
	})
	return helperNames.names, helperNames.err
}

// writeTar writes entries sorted by name, which puts every directory
// before what it holds, as an unpacker expects.
func writeTar(out string, entries map[string]tarEntry) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		e := entries[name]
		e.hdr.ModTime = imageTime
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return fmt.Errorf("rootfs %s: %w", name, err)
		}
		switch {
		case e.src != "":
			if err := copyFile(tw, e.src); err != nil {
				return fmt.Errorf("rootfs %s: %w", name, err)
			}
		case e.hdr.Typeflag == tar.TypeReg:
			if _, err := io.WriteString(tw, e.content); err != nil {
				return fmt.Errorf("rootfs %s: %w", name, err)
			}
		}
	}
	return tw.Close()
}

func copyFile(w io.Writer, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}
