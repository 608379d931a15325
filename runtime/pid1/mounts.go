package pid1

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/runtime/spec"
)

// setupRootfs mounts the overlay and everything under it while the init
// still sees the host's tree. All of it happens in the container's own mount
// namespace, made private first, so nothing shows on the host and everything
// vanishes with the namespace when the container ends.
func setupRootfs(cfg *spec.Config) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	r := cfg.Rootfs
	if err := mountOverlay(r); err != nil {
		return err
	}
	root := r.Target

	// User mounts first, parents before children, then the system mounts, so
	// that a volume on /dev or /proc cannot hide them.
	mounts := append([]spec.Mount(nil), cfg.Mounts...)
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(mounts[i].Target), "/") < strings.Count(filepath.Clean(mounts[j].Target), "/")
	})
	for _, m := range mounts {
		if err := userMount(root, m); err != nil {
			return err
		}
	}

	type sysMount struct {
		target, fstype, source, data string
		flags                        uintptr
	}
	const nsd = unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV
	sys := []sysMount{
		{"/proc", "proc", "proc", "", nsd},
		{"/dev", "tmpfs", "tmpfs", "mode=755,size=65536k", unix.MS_NOSUID | unix.MS_STRICTATIME},
		{"/dev/pts", "devpts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5", unix.MS_NOSUID | unix.MS_NOEXEC},
		{"/dev/shm", "tmpfs", "shm", "mode=1777,size=65536k", nsd},
		{"/dev/mqueue", "mqueue", "mqueue", "", nsd},
		{"/sys", "sysfs", "sysfs", "", nsd | unix.MS_RDONLY},
	}
	for _, m := range sys {
		dst, err := mkdirIn(root, m.target, true)
		if err != nil {
			return err
		}
		if err := unix.Mount(m.source, dst, m.fstype, m.flags, m.data); err != nil {
			if m.target == "/sys" {
				// A host-network container may not mount a fresh sysfs;
				// the host's, read-only, is what Docker gives it then.
				if err := bindReadonly("/sys", dst); err == nil {
					continue
				}
			}
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
		if m.target == "/dev" {
			if err := populateDev(dst); err != nil {
				return err
			}
		}
	}

	etc := []struct{ src, target string }{
		{cfg.HostnameFile, "/etc/hostname"},
		{cfg.HostsFile, "/etc/hosts"},
		{cfg.ResolvConfFile, "/etc/resolv.conf"},
	}
	for _, e := range etc {
		if e.src == "" {
			continue
		}
		dst, err := mkdirIn(root, e.target, false)
		if err != nil {
			return err
		}
		if err := unix.Mount(e.src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount %s: %w", e.target, err)
		}
	}
	return nil
}

func mountOverlay(r spec.Rootfs) error {
	// The option string must fit in a page; layer dirs usually share a
	// parent, so mount from there with short relative names.
	lower := make([]string, len(r.Lower))
	dir := ""
	if len(r.Lower) > 0 {
		dir = filepath.Dir(r.Lower[0])
	}
	for i := range r.Lower {
		// overlayfs wants the top layer first.
		l := r.Lower[len(r.Lower)-1-i]
		if filepath.Dir(l) != dir {
			dir = ""
		}
		lower[i] = l
	}
	if dir != "" {
		for i := range lower {
			lower[i] = filepath.Base(lower[i])
		}
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if err := os.Chdir(dir); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		defer os.Chdir(wd)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), r.Upper, r.Work)
	if len(r.Lower) == 0 {
		return errors.New("rootfs: the image has no layers")
	}
	if err := unix.Mount("overlay", r.Target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount rootfs overlay: %w", err)
	}
	return nil
}

var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// populateDev makes the minimal /dev Docker gives a container: a few
// character devices and the usual links, no host device.
func populateDev(dev string) error {
	for _, d := range devices {
		p := filepath.Join(dev, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
	}
	links := [][2]string{
		{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"/proc/kcore", "core"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("/dev/%s: %w", l[1], err)
		}
	}
	return nil
}

func userMount(root string, m spec.Mount) error {
	target := filepath.Clean("/" + m.Target)
	switch m.Type {
	case spec.MountTmpfs:
		dst, err := mkdirIn(root, target, true)
		if err != nil {
			return err
		}
		mode := m.TmpfsMode
		if mode == 0 {
			mode = 0o1777
		}
		data := fmt.Sprintf("mode=%o", mode)
		if m.TmpfsSize > 0 {
			data += fmt.Sprintf(",size=%d", m.TmpfsSize)
		}
		flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
		if m.ReadOnly {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("tmpfs", dst, "tmpfs", flags, data); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", target, err)
		}
		return nil
	case spec.MountBind, spec.MountVolume:
		fi, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("mount %s: source %s: %w", target, m.Source, err)
		}
		dst, err := mkdirIn(root, target, fi.IsDir())
		if err != nil {
			return err
		}
		if m.Fill && fi.IsDir() {
			if err := fillVolume(dst, m.Source); err != nil {
				return fmt.Errorf("fill volume for %s: %w", target, err)
			}
		}
		if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Source, target, err)
		}
		if m.ReadOnly {
			if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("mount %s read-only: %w", target, err)
			}
		}
		return nil
	}
	return fmt.Errorf("mount %s: unknown type %q (accepted: bind, volume, tmpfs)", target, m.Type)
}

// fillVolume copies the image's content at the mount point into an empty
// volume, as Docker does the first time a named volume is used.
func fillVolume(from, vol string) error {
	ents, err := os.ReadDir(vol)
	if err != nil || len(ents) > 0 {
		return err
	}
	return copyTree(from, vol)
}

func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			if rel != "." {
				if err := os.Mkdir(out, fi.Mode().Perm()); err != nil {
					return err
				}
			}
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, out); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := copyFile(p, out, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil
		}
		if st != nil {
			_ = os.Lchown(out, int(st.Uid), int(st.Gid))
		}
		if fi.IsDir() {
			_ = os.Chmod(out, fi.Mode().Perm()|fi.Mode()&(os.ModeSticky|os.ModeSetgid))
		}
		return nil
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// mkdirIn resolves path inside root the way the container will see it,
// following symlinks as if root were "/", and creates what is missing (a
// directory, or an empty file when dir is false). It returns the host path.
// No process of the container runs yet, so the tree cannot change under us.
func mkdirIn(root, path string, dir bool) (string, error) {
	resolved, err := resolveIn(root, path)
	if err != nil {
		return "", err
	}
	host := filepath.Join(root, resolved)
	if _, err := os.Lstat(host); err == nil {
		return host, nil
	}
	if err := mkdirAllIn(root, filepath.Dir(resolved)); err != nil {
		return "", err
	}
	if dir {
		if err := os.Mkdir(host, 0o755); err != nil && !os.IsExist(err) {
			return "", fmt.Errorf("create mount point %s: %w", path, err)
		}
		return host, nil
	}
	f, err := os.OpenFile(host, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return "", fmt.Errorf("create mount point %s: %w", path, err)
	}
	return host, f.Close()
}

func mkdirAllIn(root, resolved string) error {
	cur := "/"
	for _, c := range strings.Split(strings.Trim(resolved, "/"), "/") {
		if c == "" {
			continue
		}
		cur = filepath.Join(cur, c)
		if err := os.Mkdir(filepath.Join(root, cur), 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create %s: %w", cur, err)
		}
	}
	return nil
}

// resolveIn returns path with every symlink resolved, confined to root: an
// absolute link restarts at root and ".." never climbs above it.
func resolveIn(root, path string) (string, error) {
	rest := strings.Split(strings.Trim(filepath.Clean("/"+path), "/"), "/")
	cur := "/"
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("resolve %s: too many levels of symbolic links", path)
		}
		l, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(l) {
			cur = "/"
		}
		rest = append(strings.Split(strings.Trim(l, "/"), "/"), rest...)
	}
	return cur, nil
}

func bindReadonly(src, dst string) error {
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, "")
}

// pivotRoot makes the overlay the root and detaches the host's tree, so no
// path leads back out (chroot alone can be escaped with CAP_SYS_CHROOT).
func pivotRoot(newRoot string) error {
	oldFD, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(oldFD)
	newFD, err := unix.Open(newRoot, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(newFD)
	if err := unix.Fchdir(newFD); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Fchdir(oldFD); err != nil {
		return err
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach host root: %w", err)
	}
	return unix.Chdir("/")
}

// maskPaths hides kernel interfaces a container has no business reading:
// files get /dev/null over them, directories an empty read-only tmpfs.
func maskPaths(paths []string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			continue // not on this kernel
		}
		if fi.IsDir() {
			err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
		} else {
			err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

func readonlyPaths(paths []string) error {
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := bindReadonly(p, p); err != nil {
			return fmt.Errorf("make %s read-only: %w", p, err)
		}
	}
	return nil
}
