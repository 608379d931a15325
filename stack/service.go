package stack

import (
	"cmp"
	"errors"
	"maps"
	"math/big"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Swarm's defaults, written into every spec so that the spec says what runs
// rather than leaving it to whoever reads it.
const (
	defaultRestartDelay = 5 * time.Second
	defaultMonitor      = 5 * time.Second
	// maxServiceName is the longest DNS label: tasks resolve services by name.
	maxServiceName = 63
)

func (c *converter) service(key string, s types.ServiceConfig) (*typesv1.ServiceSpec, error) {
	sp := keyPath("services", key)
	name := c.scope(key)
	if len(name) > maxServiceName {
		return nil, keyErrorf(sp, "service name %q is longer than %d characters", name, maxServiceName)
	}
	if s.Image == "" {
		return nil, keyErrorf(sp.Next("image"), "no image given (stack deploy runs images and does not build them)")
	}
	deploy := s.Deploy
	if deploy == nil {
		deploy = &types.DeployConfig{}
	}

	ctr, err := c.container(key, s, sp)
	if err != nil {
		return nil, err
	}
	task := &typesv1.TaskSpec{Container: ctr}
	if task.Resources, err = resources(deploy.Resources, sp.Next("deploy").Next("resources")); err != nil {
		return nil, err
	}
	if task.Restart, err = restartPolicy(s, sp); err != nil {
		return nil, err
	}
	task.Placement = placement(deploy.Placement)
	if task.Log, err = c.logConfig(s.Logging, sp.Next("logging")); err != nil {
		return nil, err
	}
	if task.Networks, err = c.serviceNetworks(key, s, sp); err != nil {
		return nil, err
	}

	svc := &typesv1.ServiceSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: c.labels(deploy.Labels)},
		Task:        task,
	}
	svc.Annotations.Labels[LabelImage] = s.Image
	if err := setMode(svc, s, deploy, sp.Next("deploy")); err != nil {
		return nil, err
	}
	if svc.Update, err = updateConfig(deploy.UpdateConfig, sp.Next("deploy").Next("update_config"), true); err != nil {
		return nil, err
	}
	if svc.Rollback, err = updateConfig(deploy.RollbackConfig, sp.Next("deploy").Next("rollback_config"), false); err != nil {
		return nil, err
	}
	if svc.Endpoint, err = c.endpoint(s, deploy, sp); err != nil {
		return nil, err
	}
	return svc, nil
}

func (c *converter) container(key string, s types.ServiceConfig, sp tree.Path) (*typesv1.ContainerSpec, error) {
	ctr := &typesv1.ContainerSpec{
		Image:      s.Image,
		Labels:     c.labels(s.Labels),
		Command:    slices.Clone([]string(s.Entrypoint)),
		Args:       slices.Clone([]string(s.Command)),
		Hostname:   s.Hostname,
		Env:        environment(s.Environment),
		Dir:        s.WorkingDir,
		User:       s.User,
		StopSignal: s.StopSignal,
		Hosts:      extraHosts(s.ExtraHosts),
		Tty:        s.Tty,
		OpenStdin:  s.StdinOpen,
		ReadOnly:   s.ReadOnly,
		CapAdd:     sortedSet(s.CapAdd),
		CapDrop:    sortedSet(s.CapDrop),
	}
	if len(s.Sysctls) > 0 {
		ctr.Sysctls = maps.Clone(map[string]string(s.Sysctls))
	}
	if s.StopGracePeriod != nil {
		ctr.StopGracePeriod = durationpb.New(time.Duration(*s.StopGracePeriod))
	}
	if len(s.DNS)+len(s.DNSSearch)+len(s.DNSOpts) > 0 {
		ctr.DnsConfig = &typesv1.DNSConfig{
			Nameservers: slices.Clone([]string(s.DNS)),
			Search:      slices.Clone([]string(s.DNSSearch)),
			Options:     slices.Clone(s.DNSOpts),
		}
	}
	switch s.NetworkMode {
	case "":
	case "host", "none":
		ctr.NetworkMode = s.NetworkMode
	default:
		// bridge, service:x, container:x have no swarm equivalent; Docker
		// ignores network_mode altogether and joins the default network.
		c.notes.unsupportedKey(sp.Next("network_mode"))
	}
	var err error
	if ctr.Healthcheck, err = healthcheck(s.HealthCheck, sp.Next("healthcheck")); err != nil {
		return nil, err
	}
	if ctr.Mounts, err = c.mounts(s, sp); err != nil {
		return nil, err
	}
	if ctr.Secrets, err = c.secretRefs(s.Secrets, sp.Next("secrets")); err != nil {
		return nil, err
	}
	if ctr.Configs, err = c.configRefs(s.Configs, sp.Next("configs")); err != nil {
		return nil, err
	}
	return ctr, nil
}

// environment renders the merged environment and env_file entries as sorted
// KEY=VALUE. A variable listed without a value and unset in the environment
// is left out, as compose leaves it out of the container.
func environment(env types.MappingWithEquals) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if v := env[k]; v != nil {
			out = append(out, k+"="+*v)
		}
	}
	return out
}

// extraHosts renders "IP NAME", the /etc/hosts order swarm uses.
func extraHosts(h types.HostsList) []string {
	var out []string
	for _, host := range slices.Sorted(maps.Keys(h)) {
		for _, ip := range h[host] {
			out = append(out, ip+" "+host)
		}
	}
	return out
}

func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func healthcheck(h *types.HealthCheckConfig, p tree.Path) (*typesv1.HealthConfig, error) {
	if h == nil {
		return nil, nil
	}
	if h.Disable {
		if len(h.Test) > 0 && !(len(h.Test) == 1 && h.Test[0] == "NONE") {
			return nil, keyErrorf(p, "test and disable can't be set at the same time")
		}
		return &typesv1.HealthConfig{Test: []string{"NONE"}}, nil
	}
	if len(h.Test) > 0 {
		switch h.Test[0] {
		case "CMD", "CMD-SHELL", "NONE":
		default:
			return nil, keyErrorf(p.Next("test"), `must start with "CMD", "CMD-SHELL" or "NONE"`)
		}
	}
	out := &typesv1.HealthConfig{
		Test:        slices.Clone([]string(h.Test)),
		Interval:    duration(h.Interval),
		Timeout:     duration(h.Timeout),
		StartPeriod: duration(h.StartPeriod),
	}
	if h.Retries != nil {
		out.Retries = int64(*h.Retries)
	}
	return out, nil
}

func duration(d *types.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(time.Duration(*d))
}

func resources(r types.Resources, p tree.Path) (*typesv1.ResourceRequirements, error) {
	limits, err := resource(r.Limits, p.Next("limits"))
	if err != nil {
		return nil, err
	}
	reservations, err := resource(r.Reservations, p.Next("reservations"))
	if err != nil {
		return nil, err
	}
	if limits == nil && reservations == nil {
		return nil, nil
	}
	if reservations != nil {
		// Reservations are cpus and memory in swarm: pids are a limit only.
		reservations.Pids = 0
	}
	return &typesv1.ResourceRequirements{Limits: limits, Reservations: reservations}, nil
}

func resource(r *types.Resource, p tree.Path) (*typesv1.Resources, error) {
	if r == nil {
		return nil, nil
	}
	nano, err := nanoCPUs(r.NanoCPUs)
	if err != nil {
		return nil, keyErrorf(p.Next("cpus"), "%v", err)
	}
	if r.MemoryBytes < 0 {
		return nil, keyErrorf(p.Next("memory"), "must not be negative")
	}
	if r.Pids < 0 {
		return nil, keyErrorf(p.Next("pids"), "must not be negative")
	}
	if nano == 0 && r.MemoryBytes == 0 && r.Pids == 0 {
		return nil, nil
	}
	return &typesv1.Resources{NanoCpus: nano, MemoryBytes: int64(r.MemoryBytes), Pids: r.Pids}, nil
}

// nanoCPUs converts cpus exactly, as Docker's ParseCPUs does from the
// string: compose-go keeps cpus as a float32, whose 0.1 times 1e9 is not
// 1e8, so the float goes back to its shortest decimal first.
func nanoCPUs(v types.NanoCPUs) (int64, error) {
	f := float32(v)
	if f < 0 {
		return 0, errors.New("must not be negative")
	}
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(float64(f), 'f', -1, 32))
	if !ok {
		return 0, errors.New("invalid number of CPUs")
	}
	r.Mul(r, big.NewRat(1e9, 1))
	if !r.IsInt() {
		return 0, errors.New("value is too precise")
	}
	return r.Num().Int64(), nil
}

// restartPolicy follows docker/cli's convertRestartPolicy: deploy.restart_policy
// wins, the service-level restart is the fallback, and swarm's defaults (any,
// 5 s) fill the rest. Unlike Docker, `restart: "no"` means no restart: Docker
// maps it to "no policy", which swarm runs as "any".
func restartPolicy(s types.ServiceConfig, sp tree.Path) (*typesv1.RestartPolicy, error) {
	out := &typesv1.RestartPolicy{Condition: typesv1.RestartPolicy_CONDITION_ANY, Delay: durationpb.New(defaultRestartDelay)}
	var rp *types.RestartPolicy
	if s.Deploy != nil {
		rp = s.Deploy.RestartPolicy
	}
	if rp == nil {
		if s.Restart == "" {
			return out, nil
		}
		policy, attempts, _ := strings.Cut(s.Restart, ":")
		switch policy {
		case "no":
			out.Condition = typesv1.RestartPolicy_CONDITION_NONE
		case "always", "unless-stopped":
		case "on-failure":
			out.Condition = typesv1.RestartPolicy_CONDITION_ON_FAILURE
			if attempts != "" {
				n, err := strconv.ParseUint(attempts, 10, 64)
				if err != nil {
					return nil, keyErrorf(sp.Next("restart"), "invalid maximum retry count %q", attempts)
				}
				out.MaxAttempts = n
			}
		default:
			return nil, keyErrorf(sp.Next("restart"), "%q is not one of no, always, on-failure, unless-stopped", s.Restart)
		}
		return out, nil
	}
	p := sp.Next("deploy").Next("restart_policy")
	switch rp.Condition {
	case "", "any":
	case "on-failure":
		out.Condition = typesv1.RestartPolicy_CONDITION_ON_FAILURE
	case "none":
		out.Condition = typesv1.RestartPolicy_CONDITION_NONE
	default:
		return nil, keyErrorf(p.Next("condition"), "%q is not one of none, on-failure, any", rp.Condition)
	}
	if rp.Delay != nil {
		out.Delay = duration(rp.Delay)
	}
	if rp.MaxAttempts != nil {
		out.MaxAttempts = *rp.MaxAttempts
	}
	out.Window = duration(rp.Window)
	return out, nil
}

func placement(pl types.Placement) *typesv1.Placement {
	out := &typesv1.Placement{Constraints: sortedSet(pl.Constraints), MaxReplicas: pl.MaxReplicas}
	// Preferences are a hierarchy: their order is meaning, not noise.
	for _, pref := range pl.Preferences {
		out.Preferences = append(out.Preferences, "spread="+pref.Spread)
	}
	if len(out.Constraints) == 0 && len(out.Preferences) == 0 && out.MaxReplicas == 0 {
		return nil
	}
	return out
}

func setMode(svc *typesv1.ServiceSpec, s types.ServiceConfig, d *types.DeployConfig, p tree.Path) error {
	switch d.Mode {
	case "", "replicated":
		replicas := 1
		switch {
		case d.Replicas != nil && s.Scale != nil && *d.Replicas != *s.Scale:
			return keyErrorf(p.Next("replicas"), "%d differs from scale %d", *d.Replicas, *s.Scale)
		case d.Replicas != nil:
			replicas = *d.Replicas
		case s.Scale != nil:
			replicas = *s.Scale
		}
		if replicas < 0 {
			return keyErrorf(p.Next("replicas"), "must not be negative")
		}
		svc.Mode = &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: uint64(replicas)}}
	case "global":
		if d.Replicas != nil {
			return keyErrorf(p.Next("replicas"), "replicas can only be used with replicated mode")
		}
		if d.Placement.MaxReplicas > 0 {
			return keyErrorf(p.Next("placement").Next("max_replicas_per_node"), "max_replicas_per_node can only be used with replicated mode")
		}
		svc.Mode = &typesv1.ServiceSpec_Global{Global: &typesv1.GlobalService{}}
	default:
		return keyErrorf(p.Next("mode"), "%q is not one of replicated, global", d.Mode)
	}
	return nil
}

// updateConfig fills swarm's defaults (parallelism 1, pause, 5 s monitor,
// stop-first) whether or not the file has the section: in our spec
// parallelism 0 means "all at once", so leaving it out would not do.
func updateConfig(u *types.UpdateConfig, p tree.Path, update bool) (*typesv1.UpdateConfig, error) {
	out := &typesv1.UpdateConfig{
		Parallelism:   1,
		FailureAction: typesv1.UpdateConfig_FAILURE_ACTION_PAUSE,
		Monitor:       durationpb.New(defaultMonitor),
		Order:         typesv1.UpdateConfig_ORDER_STOP_FIRST,
	}
	if u == nil {
		return out, nil
	}
	if u.Parallelism != nil {
		out.Parallelism = *u.Parallelism
	}
	if u.Delay > 0 {
		out.Delay = durationpb.New(time.Duration(u.Delay))
	}
	if u.Monitor > 0 {
		out.Monitor = durationpb.New(time.Duration(u.Monitor))
	}
	switch u.FailureAction {
	case "", "pause":
	case "continue":
		out.FailureAction = typesv1.UpdateConfig_FAILURE_ACTION_CONTINUE
	case "rollback":
		if !update {
			// A failed rollback has nothing to roll back to.
			return nil, keyErrorf(p.Next("failure_action"), "%q is not one of pause, continue", u.FailureAction)
		}
		out.FailureAction = typesv1.UpdateConfig_FAILURE_ACTION_ROLLBACK
	default:
		if !update {
			return nil, keyErrorf(p.Next("failure_action"), "%q is not one of pause, continue", u.FailureAction)
		}
		return nil, keyErrorf(p.Next("failure_action"), "%q is not one of pause, continue, rollback", u.FailureAction)
	}
	if u.MaxFailureRatio < 0 || u.MaxFailureRatio > 1 {
		return nil, keyErrorf(p.Next("max_failure_ratio"), "%v is not between 0 and 1", u.MaxFailureRatio)
	}
	out.MaxFailureRatio = u.MaxFailureRatio
	switch u.Order {
	case "", "stop-first":
	case "start-first":
		out.Order = typesv1.UpdateConfig_ORDER_START_FIRST
	default:
		return nil, keyErrorf(p.Next("order"), "%q is not one of stop-first, start-first", u.Order)
	}
	return out, nil
}

// logConfig keeps the size-based rotation options; shoal's runtime writes
// json lines itself, so other drivers cannot be honoured.
func (c *converter) logConfig(l *types.LoggingConfig, p tree.Path) (*typesv1.LogConfig, error) {
	if l == nil {
		return nil, nil
	}
	switch l.Driver {
	case "", "json-file", "local":
	default:
		c.notes.unsupportedKey(p.Next("driver"))
		return nil, nil
	}
	out := &typesv1.LogConfig{}
	for _, k := range slices.Sorted(maps.Keys(l.Options)) {
		v := l.Options[k]
		switch k {
		case "max-size":
			n, err := parseSize(v)
			if err != nil || n < 0 {
				return nil, keyErrorf(p.Next("options").Next(k), "invalid size %q", v)
			}
			out.MaxSize = n
		case "max-file":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return nil, keyErrorf(p.Next("options").Next(k), "invalid number of files %q", v)
			}
			out.MaxFiles = n
		default:
			c.notes.unsupportedKey(p.Next("options").Next(k))
		}
	}
	if out.MaxSize == 0 && out.MaxFiles == 0 {
		return nil, nil
	}
	return out, nil
}

// parseSize reads "10m", "1.5g", "512" the way compose-go reads memory
// sizes (docker/go-units RAMInBytes: binary multiples).
func parseSize(s string) (int64, error) {
	var b types.UnitBytes
	if err := b.DecodeMapstructure(s); err != nil {
		return 0, err
	}
	return int64(b), nil
}

// serviceNetworks lists the attachments of a service, sorted by network
// name. Like Docker, a service that names no network joins the stack's
// default one, and the service's short name is an alias on each network so
// that "web" resolves inside the stack.
func (c *converter) serviceNetworks(key string, s types.ServiceConfig, sp tree.Path) ([]*typesv1.NetworkAttachmentConfig, error) {
	if s.NetworkMode == "host" || s.NetworkMode == "none" {
		return nil, nil
	}
	nets := s.Networks
	if len(nets) == 0 {
		nets = map[string]*types.ServiceNetworkConfig{"default": nil}
	}
	var out []*typesv1.NetworkAttachmentConfig
	for _, nk := range slices.Sorted(maps.Keys(nets)) {
		def, declared := c.p.Networks[nk]
		if !declared && nk != "default" {
			return nil, keyErrorf(sp.Next("networks"), "undefined network %q", nk)
		}
		c.usedNetworks[nk] = true
		att := &typesv1.NetworkAttachmentConfig{Target: c.objectName(nk, def.Name, bool(def.External))}
		if cfg := nets[nk]; cfg != nil {
			att.Aliases = slices.Clone(cfg.Aliases)
			for _, a := range []string{cfg.Ipv4Address, cfg.Ipv6Address} {
				if a != "" {
					att.Addresses = append(att.Addresses, a)
				}
			}
		}
		if !slices.Contains(att.Aliases, key) {
			att.Aliases = append(att.Aliases, key)
		}
		out = append(out, att)
	}
	slices.SortFunc(out, func(a, b *typesv1.NetworkAttachmentConfig) int { return cmp.Compare(a.Target, b.Target) })
	return out, nil
}

// secretRefs follows docker/cli's convertFileObject: target defaults to the
// secret's key, uid and gid to "0", mode to 0444. Targets are made absolute
// here (under /run/secrets) so that the runtime need not know the rule.
func (c *converter) secretRefs(refs []types.ServiceSecretConfig, p tree.Path) ([]*typesv1.SecretReference, error) {
	var out []*typesv1.SecretReference
	for _, r := range refs {
		def, ok := c.p.Secrets[r.Source]
		if !ok {
			return nil, keyErrorf(p, "undefined secret %q", r.Source)
		}
		out = append(out, &typesv1.SecretReference{
			SecretName: c.objectName(r.Source, def.Name, bool(def.External)),
			File:       fileTarget(types.FileReferenceConfig(r), "/run/secrets"),
		})
	}
	slices.SortFunc(out, func(a, b *typesv1.SecretReference) int {
		return cmp.Or(cmp.Compare(a.SecretName, b.SecretName), cmp.Compare(a.File.Name, b.File.Name))
	})
	return out, nil
}

// configRefs is secretRefs for configs, whose files land under / by default.
func (c *converter) configRefs(refs []types.ServiceConfigObjConfig, p tree.Path) ([]*typesv1.ConfigReference, error) {
	var out []*typesv1.ConfigReference
	for _, r := range refs {
		def, ok := c.p.Configs[r.Source]
		if !ok {
			return nil, keyErrorf(p, "undefined config %q", r.Source)
		}
		out = append(out, &typesv1.ConfigReference{
			ConfigName: c.objectName(r.Source, def.Name, bool(def.External)),
			File:       fileTarget(types.FileReferenceConfig(r), "/"),
		})
	}
	slices.SortFunc(out, func(a, b *typesv1.ConfigReference) int {
		return cmp.Or(cmp.Compare(a.ConfigName, b.ConfigName), cmp.Compare(a.File.Name, b.File.Name))
	})
	return out, nil
}

func fileTarget(r types.FileReferenceConfig, dir string) *typesv1.FileTarget {
	target := r.Target
	if target == "" {
		target = r.Source
	}
	if !path.IsAbs(target) {
		target = path.Join(dir, target)
	}
	t := &typesv1.FileTarget{Name: target, Uid: cmp.Or(r.UID, "0"), Gid: cmp.Or(r.GID, "0"), Mode: 0o444}
	if r.Mode != nil {
		t.Mode = uint32(*r.Mode)
	}
	return t
}
