package stack

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Labels that tie objects to their stack, named as Docker names them so that
// tools written for `docker stack` recognise shoal's objects.
const (
	// LabelNamespace is on every object of a stack; its value is the stack name.
	LabelNamespace = "com.docker.stack.namespace"
	// LabelImage is on every service of a stack; its value is the image as written.
	LabelImage = "com.docker.stack.image"
)

// defaultNetworkDriver is Docker's for stack networks.
const defaultNetworkDriver = "overlay"

var stackNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// ValidateName reports whether name can name a stack: it prefixes every
// object of the stack, so it must start with a letter or digit and hold only
// letters, digits, '_', '.' and '-'.
func ValidateName(name string) error {
	if !stackNameRE.MatchString(name) {
		return fmt.Errorf("invalid stack name %q: a stack name starts with a letter or digit and has only letters, digits, '_', '.' and '-': %w", name, ErrInvalid)
	}
	return nil
}

// Convert turns a loaded compose project into the StackSpec of stack name,
// following docker/cli's cli/compose/convert. It does no I/O except reading
// the files of file-backed secrets and configs through readFile. Every list
// of the result is sorted, so converting the same project twice gives equal
// specs and a redeploy restarts nothing.
//
// The warnings are lines such as "Ignoring unsupported options: build".
// Errors are *Error values naming the key; File is set when the project has
// a single compose file (Load attributes keys to files itself).
func Convert(name string, p *types.Project, readFile func(path string) ([]byte, error)) (*typesv1.StackSpec, []string, error) {
	spec, n, err := convert(name, p, readFile)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.File == "" && len(p.ComposeFiles) == 1 {
			e.File = p.ComposeFiles[0]
		}
		return nil, nil, err
	}
	return spec, n.lines(), nil
}

// converter holds what converting one project needs.
type converter struct {
	stack    string
	p        *types.Project
	readFile func(string) ([]byte, error)
	notes    *notes
	// usedNetworks are the project keys of the networks some service joins:
	// only those are created, as Docker does.
	usedNetworks map[string]bool
}

func convert(name string, p *types.Project, readFile func(string) ([]byte, error)) (*typesv1.StackSpec, *notes, error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	c := &converter{stack: name, p: p, readFile: readFile, notes: newNotes(), usedNetworks: map[string]bool{}}
	if err := c.checkKeys(); err != nil {
		return nil, nil, err
	}
	if len(p.DisabledServices) > 0 {
		c.notes.warnf("Skipping services whose profiles are not active: %s", strings.Join(slices.Sorted(maps.Keys(p.DisabledServices)), ", "))
	}

	spec := &typesv1.StackSpec{Name: name}
	for _, key := range slices.Sorted(maps.Keys(p.Services)) {
		svc, err := c.service(key, p.Services[key])
		if err != nil {
			return nil, nil, err
		}
		spec.Services = append(spec.Services, svc)
	}
	var err error
	if spec.Networks, err = c.networks(); err != nil {
		return nil, nil, err
	}
	if spec.Secrets, err = c.secrets(); err != nil {
		return nil, nil, err
	}
	if spec.Configs, err = c.configs(); err != nil {
		return nil, nil, err
	}
	c.checkVolumes()
	return spec, c.notes, nil
}

// checkKeys classifies the keys of the project as Load does for each file,
// so that a caller of Convert alone gets the same warnings. The project is
// walked in its JSON form, whose keys are the compose keys.
func (c *converter) checkKeys() error {
	raw, err := c.p.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode compose project: %w", err)
	}
	var model map[string]any
	if err := json.Unmarshal(raw, &model); err != nil {
		return fmt.Errorf("decode compose project: %w", err)
	}
	// The project name is compose-go's, not the file's; the stack is named
	// by the caller.
	delete(model, "name")
	w := keyWalker{notes: c.notes}
	return w.walk(model, tree.NewPath())
}

// scope prefixes a stack-local name with the stack, as Docker's Namespace.Scope.
func (c *converter) scope(key string) string { return c.stack + "_" + key }

// objectName is the name of a network, volume, secret or config of the
// project. compose-go names every object it loads: "<project>_<key>" when
// the file gives no name, the key itself for external objects. Only a name
// the user wrote is kept; an implicit one becomes "<stack>_<key>".
func (c *converter) objectName(key, name string, external bool) string {
	switch {
	case external && name != "":
		return name
	case external:
		return key
	case name == "" || name == c.p.Name+"_"+key:
		return c.scope(key)
	default:
		return name
	}
}

func (c *converter) labels(l types.Labels) map[string]string {
	out := make(map[string]string, len(l)+1)
	maps.Copy(out, l)
	out[LabelNamespace] = c.stack
	return out
}

// networks are the networks the services join, sorted by name. The
// implicit "default" network exists only when some service uses it.
func (c *converter) networks() ([]*typesv1.NetworkSpec, error) {
	var out []*typesv1.NetworkSpec
	for _, key := range slices.Sorted(maps.Keys(c.usedNetworks)) {
		def, declared := c.p.Networks[key]
		np := keyPath("networks", key)
		if declared && bool(def.External) {
			// Not ours: no stack label, so that removing the stack leaves it.
			out = append(out, &typesv1.NetworkSpec{
				Annotations: &typesv1.Annotations{Name: c.objectName(key, def.Name, true)},
				External:    true,
			})
			continue
		}
		driver := def.Driver
		if driver == "" {
			driver = defaultNetworkDriver
		}
		if driver != "overlay" && driver != "bridge" {
			return nil, keyErrorf(np.Next("driver"), "%q is not one of overlay, bridge", driver)
		}
		n := &typesv1.NetworkSpec{
			Annotations: &typesv1.Annotations{Name: c.objectName(key, def.Name, false), Labels: c.labels(def.Labels)},
			Driver:      driver,
			Internal:    def.Internal,
			Attachable:  def.Attachable,
		}
		if len(def.DriverOpts) > 0 {
			n.DriverOpts = maps.Clone(map[string]string(def.DriverOpts))
		}
		if d := def.Ipam.Driver; d != "" && d != "default" {
			c.notes.unsupportedKey(np.Next("ipam").Next("driver"))
		}
		for _, pool := range def.Ipam.Config {
			if n.Ipam == nil {
				n.Ipam = &typesv1.IPAMOptions{}
			}
			n.Ipam.Configs = append(n.Ipam.Configs, &typesv1.IPAMConfig{Subnet: pool.Subnet, Range: pool.IPRange, Gateway: pool.Gateway})
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *typesv1.NetworkSpec) int {
		return cmp.Compare(a.Annotations.Name, b.Annotations.Name)
	})
	return out, nil
}

// checkVolumes reports volume drivers a stack cannot honour: shoal keeps
// named volumes in each node's data dir.
func (c *converter) checkVolumes() {
	for key, v := range c.p.Volumes {
		if !bool(v.External) && v.Driver != "" && v.Driver != "local" {
			c.notes.unsupportedKey(keyPath("volumes", key, "driver"))
		}
	}
}

// secrets are the stack's own secrets (external ones are only referenced).
func (c *converter) secrets() ([]*typesv1.SecretSpec, error) {
	var out []*typesv1.SecretSpec
	for _, key := range slices.Sorted(maps.Keys(c.p.Secrets)) {
		def := types.FileObjectConfig(c.p.Secrets[key])
		if def.External {
			continue
		}
		data, err := c.fileObjectData(keyPath("secrets", key), def)
		if err != nil {
			return nil, err
		}
		out = append(out, &typesv1.SecretSpec{
			Annotations: &typesv1.Annotations{Name: c.objectName(key, def.Name, false), Labels: c.labels(def.Labels)},
			Data:        data,
		})
	}
	slices.SortFunc(out, func(a, b *typesv1.SecretSpec) int { return cmp.Compare(a.Annotations.Name, b.Annotations.Name) })
	return out, nil
}

// configs are the stack's own configs (external ones are only referenced).
func (c *converter) configs() ([]*typesv1.ConfigSpec, error) {
	var out []*typesv1.ConfigSpec
	for _, key := range slices.Sorted(maps.Keys(c.p.Configs)) {
		def := types.FileObjectConfig(c.p.Configs[key])
		if def.External {
			continue
		}
		data, err := c.fileObjectData(keyPath("configs", key), def)
		if err != nil {
			return nil, err
		}
		out = append(out, &typesv1.ConfigSpec{
			Annotations: &typesv1.Annotations{Name: c.objectName(key, def.Name, false), Labels: c.labels(def.Labels)},
			Data:        data,
		})
	}
	slices.SortFunc(out, func(a, b *typesv1.ConfigSpec) int { return cmp.Compare(a.Annotations.Name, b.Annotations.Name) })
	return out, nil
}

// fileObjectData is the content of a secret or config: a file (Docker's
// only source), an environment variable or inline content (compose-spec).
func (c *converter) fileObjectData(p tree.Path, def types.FileObjectConfig) ([]byte, error) {
	switch {
	case def.File != "":
		path := def.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(c.p.WorkingDir, path)
		}
		if c.readFile == nil {
			return nil, keyErrorf(p.Next("file"), "cannot read %s: no file reader", path)
		}
		data, err := c.readFile(path)
		if err != nil {
			return nil, keyErrorf(p.Next("file"), "%w", err)
		}
		return data, nil
	case def.Environment != "":
		v, ok := c.p.Environment[def.Environment]
		if !ok {
			return nil, keyErrorf(p.Next("environment"), "variable %q is not set", def.Environment)
		}
		return []byte(v), nil
	case def.Content != "":
		return []byte(def.Content), nil
	default:
		return nil, keyErrorf(p, "one of file, environment or content must be set")
	}
}
