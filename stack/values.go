package stack

import (
	"fmt"
	"maps"
	"slices"

	"github.com/compose-spec/compose-go/v2/format"
	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"
)

// checkValues checks, in one file's interpolated model, the values that
// compose-go would otherwise reject later, after merging the files, with a
// message that names neither the file nor the key ("invalid hostPort: abc",
// "'services[web].deploy.resources.limits.memory' invalid suffix: 'x'").
func checkValues(model map[string]any) error {
	services, _ := model["services"].(map[string]any)
	for _, name := range slices.Sorted(maps.Keys(services)) {
		svc, ok := services[name].(map[string]any)
		if !ok {
			continue
		}
		if err := checkServiceValues(svc, keyPath("services", name)); err != nil {
			return err
		}
	}
	return nil
}

// durationKeys are the service keys holding durations.
var durationKeys = [][]string{
	{"stop_grace_period"},
	{"healthcheck", "interval"},
	{"healthcheck", "timeout"},
	{"healthcheck", "start_period"},
	{"healthcheck", "start_interval"},
	{"deploy", "restart_policy", "delay"},
	{"deploy", "restart_policy", "window"},
	{"deploy", "update_config", "delay"},
	{"deploy", "update_config", "monitor"},
	{"deploy", "rollback_config", "delay"},
	{"deploy", "rollback_config", "monitor"},
}

func checkServiceValues(svc map[string]any, sp tree.Path) error {
	for _, k := range durationKeys {
		v, ok := lookup(svc, k...)
		if !ok || v == nil {
			continue
		}
		var d types.Duration
		if err := d.DecodeMapstructure(v); err != nil {
			return keyErrorf(keyPathFrom(sp, k...), "invalid duration %q", fmt.Sprint(v))
		}
	}
	for _, kind := range []string{"limits", "reservations"} {
		if v, ok := lookup(svc, "deploy", "resources", kind, "memory"); ok && v != nil {
			var b types.UnitBytes
			if err := b.DecodeMapstructure(v); err != nil {
				return keyErrorf(keyPathFrom(sp, "deploy", "resources", kind, "memory"), "invalid size %q", fmt.Sprint(v))
			}
		}
		if v, ok := lookup(svc, "deploy", "resources", kind, "cpus"); ok && v != nil {
			var n types.NanoCPUs
			if err := n.DecodeMapstructure(v); err != nil {
				return keyErrorf(keyPathFrom(sp, "deploy", "resources", kind, "cpus"), "invalid number of CPUs %q", fmt.Sprint(v))
			}
		}
	}
	if ports, ok := svc["ports"].([]any); ok {
		for _, e := range ports {
			switch e.(type) {
			case string, int:
				s := fmt.Sprint(e)
				if _, err := types.ParsePortConfig(s); err != nil {
					return keyErrorf(sp.Next("ports"), "invalid port %q: %v", s, err)
				}
			}
		}
	}
	if vols, ok := svc["volumes"].([]any); ok {
		for _, e := range vols {
			switch v := e.(type) {
			case string:
				if _, err := format.ParseVolume(v); err != nil {
					return keyErrorf(sp.Next("volumes"), "invalid volume %q: %v", v, err)
				}
			case map[string]any:
				if size, ok := lookup(v, "tmpfs", "size"); ok && size != nil {
					var b types.UnitBytes
					if err := b.DecodeMapstructure(size); err != nil {
						return keyErrorf(sp.Next("volumes"), "invalid tmpfs size %q", fmt.Sprint(size))
					}
				}
			}
		}
	}
	return nil
}

// lookup follows keys through nested maps.
func lookup(m map[string]any, keys ...string) (any, bool) {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func keyPathFrom(p tree.Path, keys ...string) tree.Path {
	for _, k := range keys {
		p = p.Next(k)
	}
	return p
}
