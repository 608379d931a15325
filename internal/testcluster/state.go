package testcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// baseDir holds, per cluster, a record of what it made on the host and
// its nodes' run dirs; and the lock that test processes take to choose a
// subnet and a prefix without racing each other. The short path keeps
// unix sockets in run dirs under their length limit.
const baseDir = "/run/shoal-testcluster"

// record is what a cluster made on the host, written before it makes
// any of it, so that a later test process can remove the lot when this
// one died without its cleanups (go test -timeout, a signal).
type record struct {
	Prefix string       `json:"prefix"`
	Pid    int          `json:"pid"`   // the test process
	Start  uint64       `json:"start"` // its start time, which tells a reused pid
	Bridge string       `json:"bridge"`
	Nodes  []nodeRecord `json:"nodes"`
}

type nodeRecord struct {
	Name      string `json:"name"`
	NetnsPath string `json:"netns_path"`
	Link      string `json:"link"`
	DataDir   string `json:"data_dir"`
	RunDir    string `json:"run_dir"`
}

func (r *record) dir() string  { return filepath.Join(baseDir, r.Prefix) }
func (r *record) file() string { return filepath.Join(r.dir(), "cluster.json") }

func (r *record) write() error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := r.file() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.file())
}

func readRecord(path string) (*record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// ownerAlive reports whether the test process that made r still runs.
func (r *record) ownerAlive() bool {
	start, ok := startTime(r.Pid)
	return ok && start == r.Start
}

// dirs are the node's directories whose mounts and mentions in command
// lines make things the node's.
func (n nodeRecord) dirs() []string {
	var out []string
	for _, d := range []string{n.DataDir, n.RunDir} {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// scope finds the node's processes: see scope.
func (n nodeRecord) scope() scope {
	s := scope{netns: netnsPinnedUnder(n.dirs()), dirs: n.dirs()}
	if ino, err := netnsInode(n.NetnsPath); err == nil {
		s.netns[ino] = true
	}
	return s
}

// lockHost takes the host-wide lock of test clusters.
func lockHost() (unlock func(), err error) {
	if err := os.MkdirAll(baseDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(baseDir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

// removeStale tears down the clusters of test processes that are gone
// and returns what it did. The caller holds the host lock.
func removeStale() (done []string, err error) {
	files, _ := filepath.Glob(filepath.Join(baseDir, "*", "cluster.json"))
	var errs []error
	for _, f := range files {
		r, err := readRecord(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r.ownerAlive() {
			continue
		}
		if err := teardown(r); err != nil {
			errs = append(errs, fmt.Errorf("cluster %s of gone process %d: %w", r.Prefix, r.Pid, err))
			continue
		}
		done = append(done, fmt.Sprintf("removed cluster %s of gone test process %d", r.Prefix, r.Pid))
	}
	return done, errors.Join(errs...)
}

// prefixInUse says why prefix cannot be used, or "" if it can. The
// caller holds the host lock and has removed stale clusters.
func prefixInUse(prefix string) string {
	if _, err := os.Stat(filepath.Join(baseDir, prefix)); err == nil {
		return "a cluster with it runs (" + filepath.Join(baseDir, prefix) + ")"
	}
	if links, _ := hostLinksWithPrefix(prefix); len(links) > 0 {
		return fmt.Sprintf("host links %v have it", links)
	}
	if ns, _ := filepath.Glob(filepath.Join(netnsDir, prefix+"-*")); len(ns) > 0 {
		return fmt.Sprintf("namespaces %v have it", ns)
	}
	return ""
}

// usedPrefixes lists the IPv4 networks the host has addresses in or
// specific routes to. Default and very wide routes (a VPN's 10.0.0.0/8)
// do not count: a cluster's /24 on its bridge is more specific and wins.
func usedPrefixes() ([]netip.Prefix, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			ones, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if ones, _ := r.Dst.Mask.Size(); ok && ones >= 16 {
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if p.Overlaps(u) {
			return true
		}
	}
	return false
}

// subnetCandidates is how many /24s lie in 10.200.0.0–10.249.255.0.
const subnetCandidates = 50 * 256

// chooseSubnet picks a free /24 in 10.200.0.0/16–10.249.0.0/16, starting
// at a place given by the pid so that test processes seldom look at the
// same ones. The caller holds the host lock until the subnet's bridge
// has its address, which is what the next caller will see.
func chooseSubnet(pid int) (netip.Prefix, error) {
	used, err := usedPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	for k := range subnetCandidates {
		i := (pid + k) % subnetCandidates
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + i/256), byte(i % 256), 0}), 24)
		if !overlapsAny(p, used) {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("no free /24 in 10.200.0.0-10.249.255.255")
}
