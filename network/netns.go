package network

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureNsDir makes dir a mount point with shared propagation, as
// iproute2 does for /run/netns: a namespace file unmounted here is then
// unmounted in every mount namespace that copied it (a container being
// set up, a daemon with a private /tmp), so no copy keeps the network
// namespace alive after Detach.
func ensureNsDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(dir, dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind mount %s: %w", dir, err)
		}
		err = unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// removeNsDir undoes ensureNsDir; dir must hold no namespace any more.
func removeNsDir(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// createNetns makes a new network namespace, pins it by bind-mounting it
// onto path (which must not exist) and brings its loopback up.
//
// The namespace is made by a goroutine locked to its OS thread that
// unshares the thread's network namespace, then moves the thread back to
// its first namespace before unlocking it. If the move fails, the
// goroutine returns still locked, so the runtime ends the thread rather
// than let other goroutines run in the new namespace. (Letting every
// thread end that way is not enough: on the process's main thread the
// runtime cannot end it and parks it, which keeps the namespace alive and
// makes /proc/<pid>/ns/net point into it.) This is what `ip netns add` does without the
// `ip netns exec` part, which remounts /sys and hides the cgroup v1
// hierarchies.
func createNetns(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("open own network namespace: %w", err)
			goruntime.UnlockOSThread()
			return
		}
		defer orig.Close()
		defer func() {
			// Back home, the thread may serve other goroutines again.
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				goruntime.UnlockOSThread()
			}
		}()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("unshare network namespace: %w", err)
			}
			if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind mount network namespace: %w", err)
			}
			// The package-level netlink calls open their socket in the
			// calling thread's namespace, which is the new one here.
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				return fmt.Errorf("loopback up: %w", err)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		return errors.Join(err, deleteNetns(path))
	}
	return nil
}

// deleteNetns unmounts and removes a namespace file made by createNetns;
// a missing or unmounted file is not an error, so that it finishes a half
// done create or delete. The namespace itself goes when its last process
// (the task's) exits.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// isNetns reports whether path is a pinned network namespace (a file on
// nsfs) rather than the empty file left by a create that did not finish.
func isNetns(path string) bool {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// nsHandle opens a netlink handle whose sockets live in the namespace
// pinned at path; the calls made through it configure that namespace
// without moving any thread of ours into it. It also returns the
// namespace's file, which veth creation needs to place a peer there.
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
