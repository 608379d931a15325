// Package network wires a node's tasks into their networks: per network a
// Linux bridge with the gateway address, per task a network namespace
// with one veth interface per attachment (eth0, eth1, …), outbound NAT
// and isolation between networks in one nftables table.
//
// Everything it makes is named with a prefix ("shl" on a real node:
// bridges shl-br-…, veths shl-…) and carries its owner in the link's
// alias, so a new Manager finds it after a restart (Restore) or a crash
// (Cleanup) without a state file. Addresses are not chosen here: the
// manager's allocator hands them out with the task.
//
// An overlay network (driver "overlay", a stack's default) has the same
// bridge on every node its tasks run on, each with a VXLAN port
// (shl-vx-…) that joins them into one L2 segment across nodes; the
// caller tells the manager where the network's remote tasks are
// (SetPeers). See overlay.go.
package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Error classes.
var (
	// ErrInvalid marks an attachment or task id the manager cannot use.
	ErrInvalid = errors.New("invalid network attachment")
	// ErrConflict marks a clash with what exists on the host: overlapping
	// subnets, or names taken by links that are not ours.
	ErrConflict = errors.New("network conflict")
)

// Defaults of Config.
const (
	DefaultRunDir = "/run/shoal"
	DefaultPrefix = "shl"
	DefaultTable  = "shoal"
)

// Config configures a Manager. Tests give each Manager its own RunDir,
// Prefix and Table so that they run beside each other and beside a real
// node.
type Config struct {
	// RunDir holds the namespace files, under RunDir/netns/<task id>.
	// One manager owns a RunDir.
	RunDir string
	// Prefix starts every link name; lower-case letters and digits, at
	// most 7 characters (a bridge name is <prefix>-br-<id> and must fit
	// in 15).
	Prefix string
	// Table is the nftables table (family inet).
	Table string
	// UnderlayAddr is the node's address on the network between nodes:
	// the source of its VXLAN packets, and where the other nodes send
	// the overlay traffic of its tasks (their Peer.Node). Without it,
	// overlay networks are refused (ErrNoUnderlay).
	UnderlayAddr net.IP
	// VXLANPort is the UDP port of VXLAN on every node of the cluster;
	// DefaultVXLANPort when 0.
	VXLANPort int
	Logger    *slog.Logger
}

// Manager attaches tasks to networks on this node. It is safe for
// concurrent use; operations are serialised, as they are short.
type Manager struct {
	cfg   Config
	nsDir string
	fw    *firewall
	log   *slog.Logger

	mu      sync.Mutex
	bridges map[string]*bridge // by network id
	tasks   map[string]*task   // by task id
	// creating holds the tasks whose namespace Attach is making outside
	// the lock; a rescan must not take their files for crash leftovers.
	creating map[string]bool
	// vips are the service VIPs of each network (SetVIPs), put on the
	// network's bridge whenever it exists.
	vips map[string][]net.IP
	// peers are the remote tasks of each overlay network (SetPeers),
	// programmed on the network's VXLAN port whenever it exists.
	peers map[string][]Peer
}

// task is what the manager knows of an attached task.
type task struct {
	nsPath    string
	endpoints []endpoint // in attachment order
}

// New returns a Manager. It changes nothing on the host; call Restore to
// take over what an earlier Manager left.
func New(cfg Config) (*Manager, error) {
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if !validPrefix(cfg.Prefix) {
		return nil, fmt.Errorf("%w: link prefix %q: want 1 to %d lower-case letters or digits", ErrInvalid, cfg.Prefix, maxPrefixLen)
	}
	if cfg.UnderlayAddr != nil {
		ip := cfg.UnderlayAddr.To4()
		if ip == nil {
			ip = cfg.UnderlayAddr.To16()
		}
		if ip == nil || ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("%w: underlay address %v", ErrInvalid, cfg.UnderlayAddr)
		}
		cfg.UnderlayAddr = ip
	}
	if cfg.VXLANPort < 0 || cfg.VXLANPort > 65535 {
		return nil, fmt.Errorf("%w: VXLAN port %d", ErrInvalid, cfg.VXLANPort)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg:     cfg,
		nsDir:   filepath.Join(cfg.RunDir, "netns"),
		fw:      &firewall{table: cfg.Table, prefix: cfg.Prefix},
		log:     log.With("component", "network"),
		bridges: map[string]*bridge{},
		tasks:   map[string]*task{},
	}, nil
}

// NsPath is where the namespace of task taskID is pinned.
func (m *Manager) NsPath(taskID string) string { return filepath.Join(m.nsDir, taskID) }

// Attach gives a task its network namespace, with loopback up and, for
// each attachment, an interface (eth0, eth1, … in order) with the
// allocated address on the network's bridge, made if needed. The default
// route goes through the first network's gateway. It returns the
// namespace's path, for runtime.Network{Mode: "ns", Path: nsPath}, and
// the first attachment's address ("" without attachments).
//
// Attach is idempotent per task id: a task that is attached already,
// also by a Manager before a restart, keeps its namespace and interfaces.
// On failure it undoes what it did.
func (m *Manager) Attach(taskID string, atts []*typesv1.NetworkAttachment) (nsPath string, ip string, err error) {
	if !validTaskID(taskID) {
		return "", "", fmt.Errorf("%w: task id %q", ErrInvalid, taskID)
	}
	plan, err := parseAttachments(atts)
	if err != nil {
		return "", "", fmt.Errorf("attach task %s: %w", taskID, err)
	}
	for _, at := range plan {
		if at.vni != 0 && m.cfg.UnderlayAddr == nil {
			return "", "", fmt.Errorf("attach task %s: overlay network %s: %w: the node was started without one", taskID, at.netID, ErrNoUnderlay)
		}
	}
	if len(plan) > 0 {
		ip = plan[0].addr.IP.String()
	}
	nsPath = m.NsPath(taskID)

	m.mu.Lock()
	if _, ok := m.tasks[taskID]; !ok {
		if _, err := os.Lstat(nsPath); err == nil {
			// Left by a Manager before a restart and not restored yet.
			if err := m.restoreLocked(); err != nil {
				m.mu.Unlock()
				return "", "", fmt.Errorf("attach task %s: %w", taskID, err)
			}
		}
	}
	if t, ok := m.tasks[taskID]; ok {
		if t.matches(plan) {
			m.mu.Unlock()
			return nsPath, ip, nil
		}
		// Only a task cut short by a crash looks like this, since a
		// task's networks never change: start it over.
		m.log.Warn("re-attaching task whose interfaces do not match", "task.id", taskID)
		if err := m.detachLocked(taskID); err != nil {
			m.mu.Unlock()
			return "", "", fmt.Errorf("attach task %s: %w", taskID, err)
		}
	}
	// The namespace dir is a shared bind mount made once: under the lock,
	// so that two first attaches do not both mount it.
	if err := ensureNsDir(m.nsDir); err != nil {
		m.mu.Unlock()
		return "", "", fmt.Errorf("attach task %s: %w", taskID, err)
	}
	if m.creating[taskID] {
		m.mu.Unlock()
		return "", "", fmt.Errorf("attach task %s: %w: already being attached", taskID, ErrConflict)
	}
	if m.creating == nil {
		m.creating = map[string]bool{}
	}
	m.creating[taskID] = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.creating, taskID)
		m.mu.Unlock()
	}()

	// Making a network namespace is the slow part (the kernel's, a few ms
	// each) and touches nothing shared: do it outside the lock, so that
	// the tasks of a large deploy are not attached one after the other.
	if err := createNetns(nsPath); err != nil {
		return "", "", fmt.Errorf("attach task %s: %w", taskID, err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.attachLocked(taskID, nsPath, plan); err != nil {
		return "", "", fmt.Errorf("attach task %s: %w", taskID, err)
	}
	m.log.Info("task attached", "task.id", taskID, "netns", nsPath, "task.ip", ip, "networks", len(plan))
	return nsPath, ip, nil
}

func (t *task) matches(plan []attachment) bool {
	if len(t.endpoints) != len(plan) {
		return false
	}
	for i, e := range t.endpoints {
		if e.netID != plan[i].netID || e.index != i {
			return false
		}
	}
	return true
}

// attachLocked does Attach's work for a task whose namespace was just
// made and that has nothing else yet.
func (m *Manager) attachLocked(taskID, nsPath string, plan []attachment) (err error) {
	var eps []endpoint
	defer func() {
		if err == nil {
			return
		}
		// Undo in reverse; the task is not in m.tasks, so bridges only it
		// would have used are released.
		for _, e := range slices.Backward(eps) {
			err = errors.Join(err, deleteLink(e.host))
		}
		err = errors.Join(err, deleteNetns(nsPath))
		ids := make([]string, len(plan))
		for i, at := range plan {
			ids[i] = at.netID
		}
		err = errors.Join(err, m.releaseBridges(ids))
	}()
	if len(plan) == 0 {
		m.tasks[taskID] = &task{nsPath: nsPath}
		return nil
	}
	h, ns, err := nsHandle(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	defer h.Close()
	for i, at := range plan {
		b, err := m.ensureBridge(at)
		if err != nil {
			return err
		}
		e, err := m.addEndpoint(taskID, i, at, b, h, ns)
		if err != nil {
			return err
		}
		eps = append(eps, e)
	}
	if err := setDefaultRoute(h, eps[0], plan[0]); err != nil {
		return err
	}
	m.tasks[taskID] = &task{nsPath: nsPath, endpoints: eps}
	return nil
}

// Detach removes a task's interfaces and namespace, and the bridges that
// no task uses any more. A task the manager does not know is not an
// error. The namespace itself lives on until the task's last process
// exits, without interfaces.
func (m *Manager) Detach(taskID string) error {
	if !validTaskID(taskID) {
		return fmt.Errorf("%w: task id %q", ErrInvalid, taskID)
	}
	m.mu.Lock()
	if _, ok := m.tasks[taskID]; !ok {
		if _, err := os.Lstat(m.NsPath(taskID)); err == nil {
			if err := m.restoreLocked(); err != nil {
				m.mu.Unlock()
				return fmt.Errorf("detach task %s: %w", taskID, err)
			}
		}
	}
	defer m.mu.Unlock()
	if err := m.detachLocked(taskID); err != nil {
		return fmt.Errorf("detach task %s: %w", taskID, err)
	}
	return nil
}

func (m *Manager) detachLocked(taskID string) error {
	t, ok := m.tasks[taskID]
	if !ok {
		return nil
	}
	var errs []error
	var ids []string
	for _, e := range t.endpoints {
		errs = append(errs, deleteLink(e.host))
		ids = append(ids, e.netID)
	}
	errs = append(errs, deleteNetns(t.nsPath))
	if err := errors.Join(errs...); err != nil {
		// Kept, so that Detach can be tried again.
		return err
	}
	delete(m.tasks, taskID)
	m.log.Info("task detached", "task.id", taskID)
	return m.releaseBridges(ids)
}

// Gateways returns the gateway address of each network that has a bridge
// on this node, by network id: the addresses the node's DNS server
// listens on for the tasks of that network.
func (m *Manager) Gateways() map[string]net.IP {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]net.IP, len(m.bridges))
	for id, b := range m.bridges {
		if len(b.gateways) > 0 {
			out[id] = slices.Clone(b.gateways[0].IP)
		}
	}
	return out
}

// Tasks returns the ids of the tasks the manager has attached.
func (m *Manager) Tasks() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.tasks))
	for id := range m.tasks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Restore rebuilds the manager's view from the host, after an agent
// restart: bridges, VXLAN ports and veths of its prefix are adopted by
// their aliases, tasks by their namespace files, and nothing that works
// is recreated. What a crash left half made (a veth whose task's
// namespace is gone, a bridge without tasks, a VXLAN device without its
// bridge, an empty namespace file) is removed; an overlay bridge that
// lost its VXLAN port gets it back. The firewall rules of the bridges
// kept are put back in case the table was flushed meanwhile. The peer
// entries of a VXLAN port are kept as they are until SetPeers.
func (m *Manager) Restore() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.restoreLocked()
}

func (m *Manager) restoreLocked() error {
	links, err := m.ownLinks()
	if err != nil {
		return err
	}
	bridges := map[string]*bridge{}
	tasks := map[string]*task{}
	var errs []error
	ents, err := os.ReadDir(m.nsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, ent := range ents {
		p := filepath.Join(m.nsDir, ent.Name())
		if !validTaskID(ent.Name()) || ent.IsDir() || m.creating[ent.Name()] {
			continue
		}
		if !isNetns(p) {
			m.log.Warn("removing unfinished namespace file", "netns", p)
			errs = append(errs, deleteNetns(p))
			continue
		}
		tasks[ent.Name()] = &task{nsPath: p}
	}
	type vethLink struct {
		l netlink.Link
		o owner
	}
	var veths []vethLink
	var vxlans []vethLink
	for _, l := range links {
		a := l.Attrs()
		o, ok := parseAlias(a.Alias)
		switch {
		case ok && !o.isVeth() && l.Type() == "bridge":
			if _, dup := bridges[o.netID]; dup {
				m.log.Warn("second bridge for a network", "network.id", o.netID, "link", a.Name)
				continue
			}
			addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				return fmt.Errorf("addresses of %s: %w", a.Name, err)
			}
			b := &bridge{netID: o.netID, name: a.Name, index: a.Index, vni: o.vni}
			for _, ad := range addrs {
				// A /32 is a service VIP (SetVIPs), not a gateway.
				if ones, bits := ad.Mask.Size(); ones == bits {
					continue
				}
				b.gateways = append(b.gateways, ad.IPNet)
			}
			bridges[o.netID] = b
		case ok && o.isVeth() && l.Type() == "veth":
			veths = append(veths, vethLink{l, o})
		case ok && !o.isVeth() && l.Type() == "vxlan":
			vxlans = append(vxlans, vethLink{l, o})
		case !ok && looksMade(m.cfg.Prefix, a.Name, l.Type()):
			m.log.Warn("removing link without owner", "link", a.Name)
			errs = append(errs, deleteLink(a.Name))
		}
	}
	for _, v := range veths {
		t, tok := tasks[v.o.taskID]
		b, bok := bridges[v.o.netID]
		if !tok || !bok || v.l.Attrs().MasterIndex != b.index {
			m.log.Warn("removing orphaned veth", "link", v.l.Attrs().Name, "task.id", v.o.taskID)
			errs = append(errs, deleteLink(v.l.Attrs().Name))
			continue
		}
		t.endpoints = append(t.endpoints, endpoint{netID: v.o.netID, host: v.l.Attrs().Name, ifName: v.o.ifName, index: v.o.index})
	}
	for _, v := range vxlans {
		// Adopted as it is when it is its bridge's port; ensureVxlan
		// below checks the rest. A VXLAN device of the name the bridge's
		// would have but without owner is replaced there too.
		b, ok := bridges[v.o.netID]
		if !ok || b.vni == 0 || v.l.Attrs().Name != vxlanName(m.cfg.Prefix, b.name) || v.l.Attrs().MasterIndex != b.index {
			m.log.Warn("removing orphaned VXLAN device", "link", v.l.Attrs().Name, "network.id", v.o.netID)
			errs = append(errs, deleteLink(v.l.Attrs().Name))
			continue
		}
		b.vx = v.l.Attrs().Name
	}
	for _, t := range tasks {
		slices.SortFunc(t.endpoints, func(a, b endpoint) int { return a.index - b.index })
	}
	m.bridges, m.tasks = bridges, tasks
	for id, b := range bridges {
		if !m.inUse(id) {
			errs = append(errs, m.deleteBridge(b))
			continue
		}
		errs = append(errs, enableForwarding(), m.fw.addBridge(b.name, b.subnets()), m.applyVIPs(b))
		if b.vni != 0 {
			if err := m.ensureVxlan(b); err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, m.applyPeers(b))
		}
	}
	m.log.Info("network state restored", "tasks", len(m.tasks), "bridges", len(m.bridges))
	return errors.Join(errs...)
}

// ownLinks lists the host's links named with the manager's prefix.
func (m *Manager) ownLinks() ([]netlink.Link, error) {
	var links []netlink.Link
	var err error
	// A dump interrupted by a concurrent change is retried: a partial
	// list would make links look missing.
	for range 5 {
		if links, err = netlink.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, m.cfg.Prefix+"-") {
			out = append(out, l)
		}
	}
	return out, nil
}

// Cleanup removes everything of the manager's prefix from the host: every
// link named <prefix>-…, every namespace file under RunDir/netns (and the
// directory's own mount), and the nftables table. It needs no state, so a
// fresh Manager cleans up after a crashed one; `swarm leave` and tests
// use it.
func (m *Manager) Cleanup() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	links, err := m.ownLinks()
	errs = append(errs, err)
	// Veths first: deleting one end takes the other with it, and the
	// bridges then go without ports.
	slices.SortStableFunc(links, func(a, b netlink.Link) int {
		return boolInt(a.Type() == "bridge") - boolInt(b.Type() == "bridge")
	})
	for _, l := range links {
		errs = append(errs, deleteLink(l.Attrs().Name))
	}
	ents, err := os.ReadDir(m.nsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, ent := range ents {
		errs = append(errs, deleteNetns(filepath.Join(m.nsDir, ent.Name())))
	}
	errs = append(errs, removeNsDir(m.nsDir), m.fw.deleteTable())
	m.bridges, m.tasks = map[string]*bridge{}, map[string]*task{}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("network cleanup: %w", err)
	}
	m.log.Info("network cleaned up", "prefix", m.cfg.Prefix, "table", m.cfg.Table)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
