package image

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Overlayfs names: a whiteout is a 0:0 character device, an opaque directory
// carries this xattr. Layers are stored in this form so that the unpacked
// directories can be lower dirs as they are.
const (
	whiteoutPrefix  = ".wh."
	whiteoutMeta    = ".wh..wh."
	whiteoutOpaque  = ".wh..wh..opq"
	overlayOpaque   = "trusted.overlay.opaque"
	overlayXattrPfx = "trusted.overlay."
	userOverlayPfx  = "user.overlay." // overlayfs's names under the userxattr mount option
	paxXattrPrefix  = "SCHILY.xattr."
)

// cleanPath turns an archive entry name into a path relative to the layer
// root. A leading "/" is dropped as Docker does; a path that climbs out of
// the root after cleaning is refused. The root itself is "".
func cleanPath(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", invalidf("entry %q escapes the layer root", name)
	}
	if p == "." {
		return "", nil
	}
	return p, nil
}

// unpacker writes one layer into a fresh directory. Every name is resolved
// relative to an fd on that directory with openat2(RESOLVE_NO_SYMLINKS |
// RESOLVE_BENEATH), and the last component is always created with *at calls
// that do not follow symlinks, so no entry can reach outside the layer
// whatever symlinks earlier entries planted.
type unpacker struct {
	root     int // O_PATH fd on the layer directory
	dirTimes []dirTime
}

// dirTime is a directory whose times are set after all entries are written,
// because creating its children changes its mtime.
type dirTime struct {
	name string
	ts   []unix.Timespec
}

// unpack extracts the uncompressed layer tar r into dir, which must exist
// and be empty, converting whiteouts to overlayfs form. The caller renames
// dir into place only after unpack returns nil, so a partial layer is never
// mistaken for a complete one.
func unpack(r io.Reader, dir string) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	u := &unpacker{root: fd}
	defer unix.Close(fd)

	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	for first := true; ; first = false {
		hdr, err := tr.Next()
		if err == io.EOF {
			// A tar ends with zero blocks; input that ends before even
			// one block was never a tar.
			if first && cr.n < 512 {
				return invalidf("not a tar archive")
			}
			break
		}
		if err != nil {
			if first {
				return invalidf("not a tar archive: %w", err)
			}
			return invalidf("read tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	for i := len(u.dirTimes) - 1; i >= 0; i-- {
		if err := u.setTimes(u.dirTimes[i].name, u.dirTimes[i].ts); err != nil {
			return err
		}
	}
	// The layer is renamed into place next; make its content durable first
	// so that a crash cannot leave a complete-looking layer with empty files.
	// syncfs refuses O_PATH fds.
	sfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	defer unix.Close(sfd)
	if err := unix.Syncfs(sfd); err != nil {
		return fmt.Errorf("sync layer: %w", err)
	}
	return nil
}

// openDir returns an O_PATH fd on the directory rel inside the layer,
// creating missing components (mode 0755, as Docker does) when create is
// set. It refuses to pass through a symlink or a non-directory.
func (u *unpacker) openDir(rel string, create bool) (int, error) {
	if rel == "" {
		return unix.Dup(u.root)
	}
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(u.root, rel, how)
	if err == nil || !errors.Is(err, unix.ENOENT) || !create {
		return fd, dirError(rel, rel, err)
	}
	// Walk and create component by component.
	cur := u.root
	walked := ""
	for _, comp := range strings.Split(rel, "/") {
		walked = path.Join(walked, comp)
		fd, err = unix.Openat2(cur, comp, how)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(cur, comp, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				fd, err = unix.Openat2(cur, comp, how)
			}
		}
		if cur != u.root {
			unix.Close(cur)
		}
		if err != nil {
			return -1, dirError(rel, walked, err)
		}
		cur = fd
	}
	return cur, nil
}

func dirError(rel, at string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ELOOP):
		return invalidf("path %s goes through a symlink; refusing to follow it", at)
	case errors.Is(err, unix.EXDEV):
		return invalidf("path %s escapes the layer root", at)
	case errors.Is(err, unix.ENOTDIR):
		return invalidf("path %s goes through a non-directory", at)
	case errors.Is(err, unix.ENOENT):
		return classf(ErrNotFound, "path %s: no such directory in the layer", rel)
	}
	return fmt.Errorf("open %s: %w", rel, err)
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	name, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	if name == "" {
		// The layer root's own attributes come from the container's upper
		// dir or the runtime, not from a lower layer.
		return nil
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")

	switch {
	case base == whiteoutOpaque:
		fd, err := u.openDir(dir, true)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer unix.Close(fd)
		if err := unix.Setxattr(procPath(fd, ""), overlayOpaque, []byte("y"), 0); err != nil {
			return fmt.Errorf("%s: mark opaque: %w", name, err)
		}
		return nil
	case strings.HasPrefix(base, whiteoutMeta) || strings.HasPrefix(name, whiteoutMeta) || strings.Contains(name, "/"+whiteoutMeta):
		// aufs bookkeeping (.wh..wh.plnk/..., .wh..wh.aufs): meaningless
		// to overlayfs and never part of the image's files.
		return nil
	case strings.HasPrefix(base, whiteoutPrefix):
		return u.whiteout(name, dir, strings.TrimPrefix(base, whiteoutPrefix), hdr)
	}

	pfd, err := u.openDir(dir, true)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(pfd)

	// Later entries replace earlier ones, as with tar -x.
	var st unix.Stat_t
	exists := false
	wasWhiteout := false
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if hdr.Typeflag == tar.TypeDir && isDir {
			exists = true
			break
		}
		if hdr.Typeflag == tar.TypeLink {
			if target, err := cleanPath(hdr.Linkname); err == nil && target == name {
				return nil // a link to itself changes nothing
			}
		}
		wasWhiteout = st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
		if isDir {
			err = os.RemoveAll(procPath(pfd, base))
		} else {
			err = unix.Unlinkat(pfd, base, 0)
		}
		if err != nil {
			return fmt.Errorf("%s: replace: %w", name, err)
		}
	case !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%s: stat: %w", name, err)
	}

	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !exists {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return fmt.Errorf("%s: mkdir: %w", name, err)
			}
		}
		if wasWhiteout {
			// The same layer deleted the lower dir and made a new one:
			// in overlayfs terms that is an opaque directory.
			if err := unix.Lsetxattr(procPath(pfd, base), overlayOpaque, []byte("y"), 0); err != nil {
				return fmt.Errorf("%s: mark opaque: %w", name, err)
			}
		}
		if err := u.meta(pfd, base, name, hdr, mode, true); err != nil {
			return err
		}
		u.dirTimes = append(u.dirTimes, dirTime{name: name, ts: times(hdr)})
		return nil

	case tar.TypeReg:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("%s: create: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), name)
		src := &errReader{r: r}
		_, err = io.Copy(f, src)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if src.err != nil {
			return invalidf("%s: read tar: %w", name, src.err)
		}
		if err != nil {
			return fmt.Errorf("%s: write: %w", name, err)
		}

	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return fmt.Errorf("%s: symlink: %w", name, err)
		}

	case tar.TypeLink:
		return u.hardlink(pfd, base, name, hdr.Linkname)

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		typ := map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[hdr.Typeflag]
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknodat(pfd, base, typ|0o600, dev); err != nil {
			return fmt.Errorf("%s: mknod: %w", name, err)
		}

	default:
		return invalidf("%s: unsupported tar entry type %q", name, hdr.Typeflag)
	}

	if err := u.meta(pfd, base, name, hdr, mode, hdr.Typeflag != tar.TypeSymlink); err != nil {
		return err
	}
	return u.setTimesAt(pfd, base, name, times(hdr))
}

// whiteout records that the file base in dir of lower layers is deleted.
func (u *unpacker) whiteout(name, dir, base string, hdr *tar.Header) error {
	if base == "" || base == "." || base == ".." || strings.Contains(base, "/") {
		return invalidf("%s: bad whiteout name", name)
	}
	pfd, err := u.openDir(dir, true)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		// A whiteout only hides lower layers (OCI image-spec); a file this
		// layer itself ships under that name stays.
		return nil
	}
	if err := unix.Mknodat(pfd, base, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("%s: mknod whiteout: %w", name, err)
	}
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: chown whiteout: %w", name, err)
	}
	return nil
}

// hardlink links name to an earlier entry of the same layer. The target is
// resolved with the same rules as any entry and linkat does not follow a
// final symlink, so the link can only ever share an inode of this layer.
func (u *unpacker) hardlink(pfd int, base, name, linkname string) error {
	target, err := cleanPath(linkname)
	if err != nil {
		return invalidf("hardlink %s -> %s: target escapes the layer root", name, linkname)
	}
	if target == "" {
		return invalidf("hardlink %s -> %s: target is the layer root", name, linkname)
	}
	tdir, tbase := path.Split(target)
	tfd, err := u.openDir(strings.TrimSuffix(tdir, "/"), false)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return invalidf("hardlink %s -> %s: target not in this layer", name, linkname)
		}
		return fmt.Errorf("hardlink %s -> %s: %w", name, linkname, err)
	}
	defer unix.Close(tfd)
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			return invalidf("hardlink %s -> %s: target not a file in this layer", name, linkname)
		}
		return fmt.Errorf("hardlink %s -> %s: %w", name, linkname, err)
	}
	return nil
}

// meta applies owner, mode and xattrs. Owner goes first because chown
// clears setuid bits and security.capability.
func (u *unpacker) meta(pfd int, base, name string, hdr *tar.Header, mode uint32, chmod bool) error {
	if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: chown: %w", name, err)
	}
	if chmod {
		// Only reached for entries this unpacker just created as
		// non-symlinks, so following the final component is harmless.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return fmt.Errorf("%s: chmod: %w", name, err)
		}
	}
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok || attr == "" {
			continue
		}
		if strings.HasPrefix(attr, overlayXattrPfx) || strings.HasPrefix(attr, userOverlayPfx) {
			// overlayfs acts on these (opaque, redirect, metacopy); only
			// our own whiteout conversion may set them.
			continue
		}
		err := unix.Lsetxattr(procPath(pfd, base), attr, []byte(v), 0)
		if err != nil && !errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			// Like Docker, tolerate file systems and namespaces that cannot
			// hold an xattr; fail on anything else.
			return fmt.Errorf("%s: set xattr %s: %w", name, attr, err)
		}
	}
	return nil
}

func (u *unpacker) setTimes(name string, ts []unix.Timespec) error {
	dir, base := path.Split(name)
	pfd, err := u.openDir(strings.TrimSuffix(dir, "/"), false)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil // replaced by a later entry
		}
		return err
	}
	defer unix.Close(pfd)
	return u.setTimesAt(pfd, base, name, ts)
}

func (u *unpacker) setTimesAt(pfd int, base, name string, ts []unix.Timespec) error {
	err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: set times: %w", name, err)
	}
	return nil
}

func times(hdr *tar.Header) []unix.Timespec {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return []unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// procPath names base inside the directory open as fd. The kernel resolves
// /proc/self/fd/N to exactly that directory, so path-only calls such as
// lsetxattr act on the entry this unpacker verified, not on a lookalike.
func procPath(fd int, base string) string {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	if base != "" {
		p += "/" + base
	}
	return p
}

// countingReader counts bytes read, so callers can tell an empty input from
// an empty tar and report sizes.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// errReader remembers a read error so a copy can tell a broken archive
// (invalid input) from a full disk (our problem).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}
