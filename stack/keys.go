package stack

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/schema"
	"github.com/compose-spec/compose-go/v2/tree"
)

// Which compose keys a stack honours. Every key of the compose specification
// falls in one of four classes:
//
//   - supported: converted (some only for certain values; the converter
//     checks those and reports the rest as unsupported);
//   - unsupported: ignored with one warning line, as `docker stack deploy`
//     prints "Ignoring unsupported options: build, links";
//   - deprecated: ignored with Docker's "Ignoring deprecated options" line;
//   - forbidden: an error, because ignoring them would silently drop a
//     limit or a workload the user asked for.
//
// The supported list is an allowlist: a key the specification gains in a
// later compose-go is reported as unsupported until someone wires it in,
// rather than being dropped without a word.

// supportedPaths are the keys the converter reads, as tree.Path patterns.
var supportedPaths = func() []tree.Path {
	top := []string{
		"version", "services", "services.*",
		"networks", "networks.*", "networks.*.name", "networks.*.driver",
		"networks.*.driver_opts", "networks.*.driver_opts.*",
		"networks.*.ipam", "networks.*.ipam.driver", "networks.*.ipam.config",
		"networks.*.ipam.config.[].subnet", "networks.*.ipam.config.[].gateway",
		"networks.*.ipam.config.[].ip_range",
		"networks.*.internal", "networks.*.attachable",
		"networks.*.labels", "networks.*.labels.*",
		"networks.*.external", "networks.*.external.name",
		"volumes", "volumes.*", "volumes.*.name", "volumes.*.driver",
		"volumes.*.external", "volumes.*.external.name",
		"secrets", "secrets.*", "secrets.*.name", "secrets.*.file",
		"secrets.*.environment", "secrets.*.external", "secrets.*.external.name",
		"secrets.*.labels", "secrets.*.labels.*",
		"configs", "configs.*", "configs.*.name", "configs.*.file",
		"configs.*.environment", "configs.*.content",
		"configs.*.external", "configs.*.external.name",
		"configs.*.labels", "configs.*.labels.*",
	}
	service := []string{
		"image", "command", "entrypoint",
		"environment", "environment.*",
		"env_file", "env_file.[].path", "env_file.[].required", "env_file.[].format",
		"labels", "labels.*", "label_file",
		"hostname", "user", "working_dir", "stop_signal", "stop_grace_period",
		"extra_hosts", "extra_hosts.*", "dns", "dns_search", "dns_opt",
		"healthcheck", "healthcheck.test", "healthcheck.interval", "healthcheck.timeout",
		"healthcheck.start_period", "healthcheck.retries", "healthcheck.disable",
		"tty", "stdin_open", "read_only", "cap_add", "cap_drop",
		"sysctls", "sysctls.*",
		// host and none only; the converter reports other modes.
		"network_mode",
		// json-file and local with max-size/max-file only; the converter
		// reports other drivers and options.
		"logging", "logging.driver", "logging.options", "logging.options.*",
		// shoal always runs its own init as PID 1, so init: true holds.
		"init",
		// Used as the restart policy when deploy.restart_policy is absent,
		// as docker/cli's convertRestartPolicy does.
		"restart",
		// Same meaning as deploy.replicas.
		"scale",
		// Profiles select services as compose does (COMPOSE_PROFILES).
		"profiles",
		"deploy", "deploy.mode", "deploy.replicas", "deploy.labels", "deploy.labels.*",
		"deploy.endpoint_mode",
		"deploy.resources", "deploy.resources.limits", "deploy.resources.reservations",
		"deploy.resources.limits.cpus", "deploy.resources.limits.memory",
		"deploy.resources.limits.pids",
		"deploy.resources.reservations.cpus", "deploy.resources.reservations.memory",
		"deploy.restart_policy", "deploy.restart_policy.condition",
		"deploy.restart_policy.delay", "deploy.restart_policy.max_attempts",
		"deploy.restart_policy.window",
		"deploy.placement", "deploy.placement.constraints", "deploy.placement.preferences",
		"deploy.placement.preferences.[].spread", "deploy.placement.max_replicas_per_node",
		"ports", "ports.[].target", "ports.[].published", "ports.[].protocol",
		"ports.[].mode", "ports.[].name",
		// Ignored with Docker's warning ("service can only listen on 0.0.0.0").
		"ports.[].host_ip",
		"networks", "networks.*", "networks.*.aliases",
		"networks.*.ipv4_address", "networks.*.ipv6_address",
		"volumes", "volumes.[].type", "volumes.[].source", "volumes.[].target",
		"volumes.[].read_only", "volumes.[].consistency",
		// compose-go sets create_host_path on every short-syntax bind; a
		// swarm bind never creates its source, so it is accepted and unused.
		"volumes.[].bind", "volumes.[].bind.create_host_path",
		"volumes.[].volume", "volumes.[].volume.nocopy",
		"volumes.[].tmpfs", "volumes.[].tmpfs.size", "volumes.[].tmpfs.mode",
		"tmpfs",
		"secrets", "secrets.[].source", "secrets.[].target", "secrets.[].uid",
		"secrets.[].gid", "secrets.[].mode",
		"configs", "configs.[].source", "configs.[].target", "configs.[].uid",
		"configs.[].gid", "configs.[].mode",
	}
	for _, c := range []string{"update_config", "rollback_config"} {
		service = append(service, "deploy."+c)
		for _, k := range []string{"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"} {
			service = append(service, "deploy."+c+"."+k)
		}
	}
	var paths []tree.Path
	for _, p := range top {
		paths = append(paths, tree.Path(p))
	}
	for _, p := range service {
		paths = append(paths, tree.Path("services.*."+p))
	}
	return paths
}()

// forbiddenServiceKeys are errors, with the hint Docker prints for them.
// The first eight are docker/cli's ForbiddenProperties; the resource keys
// after them are rejected by Docker's schema, and ignoring a limit the user
// set would be worse than refusing the file.
var forbiddenServiceKeys = map[string]string{
	"extends":       "support for `extends` is not implemented; merge files with several -c instead",
	"volume_driver": "instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there",
	"volumes_from":  "to share a volume between services, define it using the top-level `volumes` option and reference it from each service that shares it",
	"cpu_quota":     "set resource limits using deploy.resources",
	"cpu_shares":    "set resource limits using deploy.resources",
	"cpuset":        "set resource limits using deploy.resources",
	"mem_limit":     "set resource limits using deploy.resources",
	"memswap_limit": "set resource limits using deploy.resources",

	"cpus":            "set resource limits using deploy.resources",
	"cpu_count":       "set resource limits using deploy.resources",
	"cpu_percent":     "set resource limits using deploy.resources",
	"cpu_period":      "set resource limits using deploy.resources",
	"cpu_rt_period":   "set resource limits using deploy.resources",
	"cpu_rt_runtime":  "set resource limits using deploy.resources",
	"mem_reservation": "set resource reservations using deploy.resources",
	"pids_limit":      "set resource limits using deploy.resources",
}

// forbiddenTopKeys would drop workloads if ignored.
var forbiddenTopKeys = map[string]string{
	"include": "pass each file with -c instead",
	"jobs":    "jobs are not swarm services",
}

// deprecatedServiceKeys are docker/cli's DeprecatedProperties.
var deprecatedServiceKeys = map[string]string{
	"container_name": "setting the container name is not supported",
	"expose":         "exposing ports is unnecessary: services on the same network can reach each other's containers on any port",
}

var (
	supportedMatcher = tree.NewMatcher(supportedPaths...)
	schemaMatcher    = tree.NewMatcher(schema.AttributePaths()...)
)

// notes collects what a conversion ignores so that each kind is reported on
// one line however many services use it, as Docker does.
type notes struct {
	unsupported map[string]bool
	deprecated  map[string]string
	other       map[string]bool
}

func newNotes() *notes {
	return &notes{unsupported: map[string]bool{}, deprecated: map[string]string{}, other: map[string]bool{}}
}

func (n *notes) merge(o *notes) {
	maps.Copy(n.unsupported, o.unsupported)
	maps.Copy(n.deprecated, o.deprecated)
	maps.Copy(n.other, o.other)
}

// unsupportedKey records the key at p, named as Docker names it: relative to
// the service for service keys ("build", "deploy.resources.reservations.devices"),
// in full for the top-level sections ("networks.webnet.enable_ipv6").
func (n *notes) unsupportedKey(p tree.Path) {
	n.unsupported[displayKey(p)] = true
}

func (n *notes) warnf(format string, args ...any) {
	n.other[fmt.Sprintf(format, args...)] = true
}

// lines renders the warnings in a fixed order.
func (n *notes) lines() []string {
	var out []string
	if len(n.unsupported) > 0 {
		out = append(out, "Ignoring unsupported options: "+strings.Join(slices.Sorted(maps.Keys(n.unsupported)), ", "))
	}
	if len(n.deprecated) > 0 {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(n.deprecated)) {
			parts = append(parts, fmt.Sprintf("%s (%s)", k, n.deprecated[k]))
		}
		out = append(out, "Ignoring deprecated options: "+strings.Join(parts, ", "))
	}
	return append(out, slices.Sorted(maps.Keys(n.other))...)
}

func displayKey(p tree.Path) string {
	parts := p.Parts()
	if len(parts) > 2 && parts[0] == "services" {
		parts = parts[2:]
	}
	kept := parts[:0:0]
	for _, s := range parts {
		if s != tree.PathMatchList {
			kept = append(kept, s)
		}
	}
	return tree.NewPath(kept...).String()
}

// keyWalker classifies every key of a compose model.
type keyWalker struct {
	notes *notes
	// strict reports keys the specification does not know. It is off when
	// walking a model re-encoded from compose-go's Go types, whose JSON may
	// carry fields of its own.
	strict bool
}

// walk visits the model in key order so that the first error is always the
// same one.
func (w *keyWalker) walk(v any, p tree.Path) error {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			next := p.Next(k)
			if strings.HasPrefix(k, "x-") && !schemaMatcher.Matches(next) && !schemaMatcher.MayContain(next) {
				// Extensions are the specification's free-form escape
				// hatch (but "x-ray" may well name a service).
				continue
			}
			if err := w.visit(v[k], next); err != nil {
				return err
			}
		}
	case []any:
		next := p.Next(tree.PathMatchList)
		if !schemaMatcher.MayContain(next) && !schemaMatcher.Matches(next) {
			// A list of scalars (command, labels as KEY=VALUE, …).
			return nil
		}
		for _, e := range v {
			if err := w.walk(e, next); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *keyWalker) visit(v any, p tree.Path) error {
	parts := p.Parts()
	if len(parts) == 1 {
		if hint, ok := forbiddenTopKeys[parts[0]]; ok {
			return keyErrorf(p, "not supported by stack deploy: %s", hint)
		}
	}
	if len(parts) == 3 && parts[0] == "services" {
		if hint, ok := forbiddenServiceKeys[parts[2]]; ok {
			return keyErrorf(p, "not supported by stack deploy: %s", hint)
		}
		if why, ok := deprecatedServiceKeys[parts[2]]; ok {
			w.notes.deprecated[parts[2]] = why
			return nil
		}
	}
	if !schemaMatcher.Matches(p) && !schemaMatcher.MayContain(p) {
		if w.strict {
			return keyErrorf(p, "unknown key")
		}
		return nil
	}
	if !supportedMatcher.Matches(p) && !supportedMatcher.MayContain(p) {
		w.notes.unsupportedKey(p)
		return nil
	}
	return w.walk(v, p)
}
