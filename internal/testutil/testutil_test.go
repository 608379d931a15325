package testutil

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	m.Run()
	Cleanup()
}

func TestRequiresRoot(t *testing.T) {
	var sub *testing.T
	t.Run("inner", func(t *testing.T) {
		sub = t
		RequiresRoot(t)
	})
	if root := os.Geteuid() == 0; sub.Skipped() == root {
		t.Errorf("as euid %d: skipped = %v", os.Geteuid(), sub.Skipped())
	}
}

func TestGoBuild(t *testing.T) {
	p := GoBuild(t, HelperPkg)
	if again := GoBuild(t, HelperPkg); again != p {
		t.Errorf("second GoBuild = %s, want the cached %s", again, p)
	}
	if want := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(os.Getpid())); !strings.HasPrefix(p, want+"/") {
		t.Errorf("binary %s not in the process's directory %s", p, want)
	}
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static, would not run in an empty image", p)
		}
	}
}

func TestRemoveStaleBinDirs(t *testing.T) {
	// A pid that is surely gone: a child that has been waited for.
	cmd := exec.Command(GoBuild(t, HelperPkg), "true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(cmd.Process.Pid))
	live := filepath.Join(os.TempDir(), binDirPrefix+strconv.Itoa(os.Getppid()))
	for _, d := range []string{stale, live} {
		if _, err := os.Stat(d); err == nil {
			t.Skipf("%s exists already; not touching it", d)
		}
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	removeStaleBinDirs()
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory of exited pid %d still there (%v)", cmd.Process.Pid, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("directory of running pid %d removed: %v", os.Getppid(), err)
	}
}

func TestHelperRootfs(t *testing.T) {
	p := HelperRootfs(t, map[string]string{
		"/etc/hostname":   "custom\n",
		"opt/app/conf.js": "{}",
		"/etc/extra":      "x",
	})
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type got struct {
		hdr     *tar.Header
		content string
	}
	entries := map[string]got{}
	var order []string
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if _, dup := entries[name]; dup {
			t.Errorf("%s twice in the tar", name)
		}
		entries[name] = got{hdr, string(b)}
		order = append(order, name)
	}
	seen := map[string]bool{}
	for _, name := range order {
		if d := filepath.Dir(name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", name, d)
		}
		seen[name] = true
	}

	helper, err := os.ReadFile(GoBuild(t, HelperPkg))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		typ      byte
		mode     int64
		uid      int
		content  string // for regular files; "" to skip
		linkname string
	}{
		{name: "bin/helper", typ: tar.TypeReg, mode: 0o755, content: string(helper)},
		{name: "bin/true", typ: tar.TypeSymlink, mode: 0o777, linkname: "helper"},
		{name: "bin/false", typ: tar.TypeSymlink, mode: 0o777, linkname: "helper"},
		{name: "bin/sleep", typ: tar.TypeSymlink, mode: 0o777, linkname: "helper"},
		{name: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, linkname: "helper"},
		{name: "bin/ps", typ: tar.TypeSymlink, mode: 0o777, linkname: "helper"},
		{name: "proc", typ: tar.TypeDir, mode: 0o555},
		{name: "sys", typ: tar.TypeDir, mode: 0o555},
		{name: "dev", typ: tar.TypeDir, mode: 0o755},
		{name: "tmp", typ: tar.TypeDir, mode: 0o1777},
		{name: "root", typ: tar.TypeDir, mode: 0o700},
		{name: "home/app", typ: tar.TypeDir, mode: 0o755, uid: AppUID},
		{name: "var/empty", typ: tar.TypeDir, mode: 0o755},
		{name: "data", typ: tar.TypeDir, mode: 0o755},
		{name: "data/seed.txt", typ: tar.TypeReg, mode: 0o644, content: "from-image\n"},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, content: "root:x:0:0:root:/root:/bin/sh\n" +
			"app:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/var/empty:/bin/false\n"},
		{name: "etc/group", typ: tar.TypeReg, mode: 0o644, content: "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n"},
		{name: "etc/hostname", typ: tar.TypeReg, mode: 0o644, content: "custom\n"}, // replaced by extra
		{name: "etc/extra", typ: tar.TypeReg, mode: 0o644, content: "x"},
		{name: "opt", typ: tar.TypeDir, mode: 0o755},
		{name: "opt/app", typ: tar.TypeDir, mode: 0o755},
		{name: "opt/app/conf.js", typ: tar.TypeReg, mode: 0o644, content: "{}"},
	}
	for _, tt := range tests {
		e, ok := entries[tt.name]
		if !ok {
			t.Errorf("%s missing", tt.name)
			continue
		}
		h := e.hdr
		if h.Typeflag != tt.typ || h.Mode != tt.mode || h.Uid != tt.uid || h.Gid != tt.uid || h.Linkname != tt.linkname {
			t.Errorf("%s: type %c mode %o uid %d gid %d link %q, want type %c mode %o uid/gid %d link %q",
				tt.name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Linkname, tt.typ, tt.mode, tt.uid, tt.linkname)
		}
		if tt.content != "" && e.content != tt.content {
			t.Errorf("%s holds %.40q, want %.40q", tt.name, e.content, tt.content)
		}
	}
	// Every subcommand has its symlink.
	for _, name := range strings.Fields(helperRun(t, nil, "_commands").stdout) {
		if e, ok := entries["bin/"+name]; !ok || e.hdr.Linkname != "helper" {
			t.Errorf("no symlink bin/%s → helper", name)
		}
	}
	if _, ok := entries["bin/_commands"]; ok {
		t.Error("internal subcommand _commands has a symlink")
	}
}

// TestHelperRootfsRuns unpacks the image's /bin and runs commands through
// their symlinks, as a container would.
func TestHelperRootfsRuns(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Open(HelperRootfs(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(hdr.Name) != "bin" {
			continue
		}
		dst := filepath.Join(dir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			err = os.Symlink(hdr.Linkname, dst)
		case tar.TypeReg:
			var b bytes.Buffer
			if _, err = io.Copy(&b, tr); err == nil {
				err = os.WriteFile(dst, b.Bytes(), os.FileMode(hdr.Mode))
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		argv []string
		code int
		out  string
	}{
		{argv: []string{"true"}, code: 0},
		{argv: []string{"true", "ignored", "args"}, code: 0},
		{argv: []string{"false"}, code: 1},
		{argv: []string{"echo", "via", "symlink"}, out: "via symlink\n"},
		{argv: []string{"sh", "-c", "echo  from   sh"}, out: "from sh\n"},
		{argv: []string{"sh", "-c", "exit 7"}, code: 7},
		{argv: []string{"helper", "exit", "5"}, code: 5},
	}
	for _, tt := range tests {
		cmd := exec.Command(filepath.Join(dir, "bin", tt.argv[0]), tt.argv[1:]...)
		out, err := cmd.Output()
		if code := exitCode(t, err); code != tt.code || string(out) != tt.out {
			t.Errorf("%v: exit %d, output %q; want %d, %q", tt.argv, code, out, tt.code, tt.out)
		}
	}
}
