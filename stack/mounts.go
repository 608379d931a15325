package stack

import (
	"cmp"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// mounts converts volumes (short and long syntax) and the tmpfs key,
// following docker/cli's convertVolumeToMount, sorted by target.
func (c *converter) mounts(s types.ServiceConfig, sp tree.Path) ([]*typesv1.Mount, error) {
	var out []*typesv1.Mount
	vp := sp.Next("volumes")
	for _, v := range s.Volumes {
		m, err := c.volumeMount(v, vp)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	tp := sp.Next("tmpfs")
	for _, t := range s.Tmpfs {
		m, err := c.tmpfsMount(t, tp)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortStableFunc(out, func(a, b *typesv1.Mount) int { return cmp.Compare(a.Target, b.Target) })
	for i := 1; i < len(out); i++ {
		if out[i].Target == out[i-1].Target {
			return nil, keyErrorf(vp, "%s is mounted twice", out[i].Target)
		}
	}
	return out, nil
}

func (c *converter) volumeMount(v types.ServiceVolumeConfig, p tree.Path) (*typesv1.Mount, error) {
	if !path.IsAbs(v.Target) {
		return nil, keyErrorf(p, "target %q is not an absolute path", v.Target)
	}
	m := &typesv1.Mount{Target: path.Clean(v.Target), ReadOnly: v.ReadOnly, Consistency: v.Consistency}
	switch v.Type {
	case types.VolumeTypeVolume, "":
		if v.Bind != nil {
			return nil, keyErrorf(p, "bind options are incompatible with type volume (%s)", v.Target)
		}
		if v.Tmpfs != nil {
			return nil, keyErrorf(p, "tmpfs options are incompatible with type volume (%s)", v.Target)
		}
		m.Type = typesv1.Mount_TYPE_VOLUME
		if v.Volume != nil {
			m.VolumeNocopy = v.Volume.NoCopy
		}
		if v.Source != "" { // "" is an anonymous volume
			def, ok := c.p.Volumes[v.Source]
			if !ok {
				return nil, keyErrorf(p, "undefined volume %q", v.Source)
			}
			m.Source = c.objectName(v.Source, def.Name, bool(def.External))
		}
	case types.VolumeTypeBind:
		if v.Tmpfs != nil {
			return nil, keyErrorf(p, "tmpfs options are incompatible with type bind (%s)", v.Target)
		}
		if v.Source == "" {
			return nil, keyErrorf(p, "bind mount of %s has no source", v.Target)
		}
		m.Type = typesv1.Mount_TYPE_BIND
		m.Source = v.Source
		if !filepath.IsAbs(m.Source) {
			// compose-go resolves relative paths when it loads; a project
			// built another way gets the same rule here.
			m.Source = filepath.Join(c.p.WorkingDir, m.Source)
		}
	case types.VolumeTypeTmpfs:
		if v.Source != "" {
			return nil, keyErrorf(p, "tmpfs mount of %s takes no source (got %q)", v.Target, v.Source)
		}
		m.Type = typesv1.Mount_TYPE_TMPFS
		if v.Tmpfs != nil {
			m.TmpfsSizeBytes = int64(v.Tmpfs.Size)
			m.TmpfsMode = v.Tmpfs.Mode
		}
	default:
		return nil, keyErrorf(p, "type %q of %s is not one of volume, bind, tmpfs", v.Type, v.Target)
	}
	return m, nil
}

// tmpfsMount reads the tmpfs key, "PATH[:OPTIONS]" as `docker run --tmpfs`
// takes it, keeping the options a swarm mount has (size, mode, ro).
func (c *converter) tmpfsMount(t string, p tree.Path) (*typesv1.Mount, error) {
	target, opts, _ := strings.Cut(t, ":")
	if !path.IsAbs(target) {
		return nil, keyErrorf(p, "target %q is not an absolute path", target)
	}
	m := &typesv1.Mount{Type: typesv1.Mount_TYPE_TMPFS, Target: path.Clean(target)}
	for _, o := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "", "rw":
		case "ro":
			m.ReadOnly = true
		case "size":
			n, err := parseSize(v)
			if err != nil || n < 0 {
				return nil, keyErrorf(p, "invalid size %q in %q", v, t)
			}
			m.TmpfsSizeBytes = n
		case "mode":
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil {
				return nil, keyErrorf(p, "invalid mode %q in %q", v, t)
			}
			m.TmpfsMode = uint32(n)
		default:
			c.notes.unsupportedKey(p.Next(k))
		}
	}
	return m, nil
}
