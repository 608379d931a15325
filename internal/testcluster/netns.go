package testcluster

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 pins named namespaces; pinning nodes there
// too lets a person debugging a test run `ip netns exec stc1234-n1 ip a`.
const netnsDir = "/run/netns"

// ensureNetnsDir makes netnsDir a mount point with shared propagation,
// as iproute2 does: a pin unmounted here is then unmounted in every
// mount namespace that copied it (a container being set up by a node),
// so no copy keeps a node's namespace alive after the cluster is gone.
// The caller holds the host lock, so that two test processes do not both
// bind-mount the directory onto itself.
func ensureNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", netnsDir, "", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(netnsDir, netnsDir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", netnsDir, err)
		}
		err = unix.Mount("", netnsDir, "", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", netnsDir, err)
	}
	return nil
}

// createNetns makes a new network namespace and pins it by bind-mounting
// it onto path, which must not exist.
//
// A goroutine locked to its OS thread unshares the thread's network
// namespace, pins it, and moves the thread back before unlocking it. If
// it cannot move back, it returns still locked, and the runtime ends the
// thread rather than let other goroutines run in the node's namespace;
// the main thread, which the runtime cannot end, it would wedge there,
// so moving back is the rule and not merely letting the thread go.
func createNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		home, err := netns.Get()
		if err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("open the thread's network namespace: %w", err)
			return
		}
		defer home.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if err != nil {
			err = fmt.Errorf("pin network namespace at %s: %w", path, err)
		}
		if netns.Set(home) == nil {
			goruntime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return errors.Join(err, deleteNetns(path))
	}
	return nil
}

// deleteNetns unpins and removes a namespace file made by createNetns; a
// missing or unmounted file is not an error. The namespace itself goes
// when no process, open file or other pin holds it any more.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// netnsInode returns the inode number of the namespace pinned at path,
// which is also what stat(2) of /proc/PID/ns/net returns for every
// process in it; it fails if path is no pinned namespace.
func netnsInode(path string) (uint64, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return 0, err
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("%s is no pinned namespace", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// nsHandle opens a netlink handle whose sockets live in the namespace
// pinned at path, so that calls through it configure that namespace
// without moving a thread of ours into it. The returned file is the
// namespace's, which veth creation needs to place a peer there.
func nsHandle(path string) (*netlink.Handle, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(f.Fd()))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return h, f, nil
}
