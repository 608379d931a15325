package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/runtime/image"
	"github.com/shoal-dev/shoal/runtime/spec"
)

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Create makes a container from s without starting it. A failure leaves
// nothing behind.
func (r *Runtime) Create(s Spec) (Container, error) {
	id := newID()
	if s.Name == "" {
		s.Name = id[:12]
	}
	if !validName.MatchString(s.Name) {
		return Container{}, fmt.Errorf("%w: invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", ErrInvalid, s.Name)
	}
	img, err := r.images.Get(s.Image)
	if err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return Container{}, fmt.Errorf("%w: no such image: %s", ErrNotFound, s.Image)
		}
		return Container{}, err
	}
	c := Container{
		ID:      id,
		Name:    s.Name,
		ImageID: img.ID,
		Spec:    s,
		Created: time.Now().UTC(),
		State:   Created,
	}
	if err := resolveSpec(&c, img); err != nil {
		return Container{}, err
	}
	if err := r.checkMounts(s.Mounts); err != nil {
		return Container{}, err
	}

	r.mu.Lock()
	for _, o := range r.containers {
		if o.c.Name == s.Name {
			r.mu.Unlock()
			return Container{}, fmt.Errorf("%w: the container name %q is already in use by container %s", ErrConflict, s.Name, o.c.ID)
		}
	}
	// Reserve the name while the directory is made.
	cc := &ctr{c: c, dir: filepath.Join(r.containersDir(), id)}
	r.containers[id] = cc
	r.mu.Unlock()

	if err := r.prepare(cc); err != nil {
		r.mu.Lock()
		delete(r.containers, id)
		r.mu.Unlock()
		_ = os.RemoveAll(cc.dir)
		return Container{}, fmt.Errorf("create container %s: %w", s.Name, err)
	}
	return c, nil
}

// resolveSpec applies Docker's rules for combining the spec with the image.
func resolveSpec(c *Container, img *image.Image) error {
	s := c.Spec
	ic := img.Config
	switch {
	case s.Entrypoint != nil:
		c.Args = append(append([]string(nil), s.Entrypoint...), s.Cmd...)
	case s.Cmd != nil:
		c.Args = append(append([]string(nil), ic.Entrypoint...), s.Cmd...)
	default:
		c.Args = append(append([]string(nil), ic.Entrypoint...), ic.Cmd...)
	}
	if len(c.Args) == 0 {
		return fmt.Errorf("%w: no command specified (the image has no Entrypoint or Cmd)", ErrInvalid)
	}
	c.Env = mergeEnv(ic.Env, s.Env)
	c.WorkingDir = firstNonEmpty(s.WorkingDir, ic.WorkingDir, "/")
	c.User = firstNonEmpty(s.User, ic.User)
	c.Hostname = firstNonEmpty(s.Hostname, c.ID[:12])
	c.StopSignal = firstNonEmpty(s.StopSignal, ic.StopSignal, "SIGTERM")
	if _, err := ParseSignal(c.StopSignal); err != nil {
		return err
	}
	if s.Resources.NanoCPUs < 0 || s.Resources.MemoryLimit < 0 || s.Resources.PidsLimit < 0 {
		return fmt.Errorf("%w: resources must not be negative", ErrInvalid)
	}
	if l := s.Resources.MemoryLimit; l > 0 && l < 6*1024*1024 {
		return fmt.Errorf("%w: minimum memory limit allowed is 6MB", ErrInvalid)
	}
	var named []string
	for _, n := range append(append([]string(nil), s.CapAdd...), s.CapDrop...) {
		if !strings.EqualFold(n, "ALL") {
			named = append(named, n)
		}
	}
	if _, err := spec.CapMask(named); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c.Env = mergeEnv(c.Env, []string{"HOSTNAME=" + c.Hostname})
	return nil
}

// mergeEnv overlays later KEY=VALUE entries on earlier ones, keeping order.
func mergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	idx := map[string]int{}
	for i, e := range out {
		k, _, _ := strings.Cut(e, "=")
		idx[k] = i
	}
	for _, e := range over {
		k, _, _ := strings.Cut(e, "=")
		if i, ok := idx[k]; ok {
			out[i] = e
			continue
		}
		idx[k] = len(out)
		out = append(out, e)
	}
	return out
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func (r *Runtime) checkMounts(ms []Mount) error {
	for i, m := range ms {
		if m.Target == "" || !filepath.IsAbs(m.Target) {
			return fmt.Errorf("%w: mount %d: target %q must be an absolute path", ErrInvalid, i+1, m.Target)
		}
		switch m.Type {
		case MountBind:
			if !filepath.IsAbs(m.Source) {
				return fmt.Errorf("%w: invalid mount config for type \"bind\": source %q must be an absolute path", ErrInvalid, m.Source)
			}
			if _, err := os.Stat(m.Source); err != nil {
				return fmt.Errorf("%w: invalid mount config for type \"bind\": bind source path does not exist: %s", ErrInvalid, m.Source)
			}
		case MountVolume:
			if !validName.MatchString(m.Source) {
				return fmt.Errorf("%w: invalid mount config for type \"volume\": invalid volume name %q", ErrInvalid, m.Source)
			}
		case MountTmpfs:
			if m.Source != "" {
				return fmt.Errorf("%w: invalid mount config for type \"tmpfs\": source must be empty", ErrInvalid)
			}
		default:
			return fmt.Errorf("%w: mount %s: unknown type %q (accepted: bind, volume, tmpfs)", ErrInvalid, m.Target, m.Type)
		}
	}
	return nil
}

// prepare makes the container's directory: rootfs dirs, etc files and the
// init's config, then the record that marks the container as complete.
func (r *Runtime) prepare(c *ctr) error {
	for _, d := range []string{"", "upper", "work", "rootfs"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o700); err != nil && !(d == "" && os.IsExist(err)) {
			return err
		}
	}
	// The rootfs mount point and upper dir are seen by the container as its
	// "/": give it the usual mode.
	_ = os.Chmod(filepath.Join(c.dir, "upper"), 0o755)
	_ = os.Chmod(filepath.Join(c.dir, "rootfs"), 0o755)
	if err := r.writeEtcFiles(c); err != nil {
		return err
	}
	cfg, err := r.initConfig(c)
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(c.dir, spec.ConfigFile), cfg); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.save()
}

func (r *Runtime) writeEtcFiles(c *ctr) error {
	n := c.c.Spec.Network
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
	for _, h := range n.ExtraHosts {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || ip == "" {
			return fmt.Errorf("%w: invalid extra host %q (expected name:ip)", ErrInvalid, h)
		}
		hosts += ip + "\t" + name + "\n"
	}
	if n.IP != "" {
		hosts += n.IP + "\t" + c.c.Hostname + "\n"
	}
	resolv := hostResolvConf(n.Mode == NetworkHost)
	if len(n.DNS) > 0 || len(n.DNSSearch) > 0 {
		resolv = ""
		if len(n.DNSSearch) > 0 {
			resolv += "search " + strings.Join(n.DNSSearch, " ") + "\n"
		}
		for _, d := range n.DNS {
			resolv += "nameserver " + d + "\n"
		}
	}
	files := map[string]string{"hostname": c.c.Hostname + "\n", "hosts": hosts, "resolv.conf": resolv}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hostResolvConf is the host's resolv.conf; outside the host's network
// namespace, loopback resolvers cannot be reached, so they are dropped and
// public ones put in their place when nothing is left (Docker's rule).
func hostResolvConf(hostNet bool) string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	if hostNet {
		return string(b)
	}
	var out []string
	ns := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if strings.HasPrefix(f[1], "127.") || f[1] == "::1" {
				continue
			}
			ns++
		}
		out = append(out, line)
	}
	s := strings.TrimRight(strings.Join(out, "\n"), "\n") + "\n"
	if ns == 0 {
		s += "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
	}
	return s
}

func (r *Runtime) initConfig(c *ctr) (*spec.Config, error) {
	s := c.c.Spec
	img, err := r.images.Get(c.c.ImageID)
	if err != nil {
		return nil, err
	}
	layers, err := r.images.LayerDirs(img)
	if err != nil {
		return nil, err
	}
	caps := capabilities(s.CapAdd, s.CapDrop)
	cfg := &spec.Config{
		ID:       c.c.ID,
		Hostname: c.c.Hostname,
		Args:     c.c.Args,
		Env:      c.c.Env,
		Cwd:      c.c.WorkingDir,
		User:     c.c.User,
		Rootfs: spec.Rootfs{
			Lower:  layers,
			Upper:  filepath.Join(c.dir, "upper"),
			Work:   filepath.Join(c.dir, "work"),
			Target: filepath.Join(c.dir, "rootfs"),
		},
		Capabilities:    caps,
		NoNewPrivileges: true,
		MaskedPaths:     spec.DefaultMaskedPaths,
		ReadonlyPaths:   spec.DefaultReadonlyPaths,
		HostnameFile:    filepath.Join(c.dir, "hostname"),
		HostsFile:       filepath.Join(c.dir, "hosts"),
		ResolvConfFile:  filepath.Join(c.dir, "resolv.conf"),
		Log: spec.LogConfig{
			Path:     filepath.Join(c.dir, logFile),
			MaxSize:  s.Log.MaxSize,
			MaxFiles: s.Log.MaxFiles,
		},
		ExecSocket: r.execSocket(c.c.ID),
	}
	switch s.Network.Mode {
	case "", NetworkNone:
		cfg.NetMode = spec.NetNone
	case NetworkHost:
		cfg.NetMode = spec.NetHost
	case NetworkNamespace:
		cfg.NetMode, cfg.NetNSPath = spec.NetPath, s.Network.Path
		if s.Network.Path == "" {
			return nil, fmt.Errorf("%w: network mode %q needs a namespace path", ErrInvalid, NetworkNamespace)
		}
	default:
		return nil, fmt.Errorf("%w: network mode %q (accepted: none, host, ns)", ErrInvalid, s.Network.Mode)
	}
	for _, m := range s.Mounts {
		sm := spec.Mount{Type: m.Type, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly, TmpfsSize: m.TmpfsSize, TmpfsMode: m.TmpfsMode}
		if m.Type == MountVolume {
			dir, err := r.volume(m.Source)
			if err != nil {
				return nil, err
			}
			sm.Source, sm.Fill = dir, true
		}
		cfg.Mounts = append(cfg.Mounts, sm)
	}
	return cfg, nil
}

const logFile = "container-json.log"

// execSocket is the init's exec socket: under the run dir, named by a short
// prefix of the ID so that the path fits in sun_path.
func (r *Runtime) execSocket(id string) string {
	return filepath.Join(r.opts.RunDir, "c-"+id[:16]+".sock")
}

// volume returns a named volume's data directory, creating the volume on
// first use (Docker's local driver layout).
func (r *Runtime) volume(name string) (string, error) {
	dir := filepath.Join(r.opts.Root, "volumes", name, "_data")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("volume %s: %w", name, err)
	}
	return dir, nil
}

func capabilities(add, drop []string) []string {
	norm := func(s string) string {
		s = strings.ToUpper(s)
		if !strings.HasPrefix(s, "CAP_") {
			s = "CAP_" + s
		}
		return s
	}
	set := map[string]bool{}
	for _, c := range spec.DefaultCapabilities {
		set[c] = true
	}
	for _, c := range add {
		set[norm(c)] = true
	}
	for _, c := range drop {
		if norm(c) == "CAP_ALL" {
			set = map[string]bool{}
			continue
		}
		delete(set, norm(c))
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}
