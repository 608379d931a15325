package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/compose-spec/compose-go/v2/dotenv"
	interp "github.com/compose-spec/compose-go/v2/interpolation"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/schema"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/compose-spec/compose-go/v2/validation"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Options for Load.
type Options struct {
	// Files are the compose files (-c, repeatable); later files override
	// earlier ones. "-" is Stdin.
	Files []string
	// Stdin is read when a file is "-".
	Stdin io.Reader
	// WorkingDir resolves relative paths (bind mounts, secret files,
	// env_file). Default: the directory of the first file, or the current
	// directory when the first file is "-".
	WorkingDir string
	// Env is the interpolation environment (the CLI passes os.Environ). A
	// .env file beside the first compose file (in WorkingDir when that file
	// is stdin) is read too; Env wins over it. Docker's stack deploy ignores
	// .env; compose users expect it. COMPOSE_PROFILES selects profiles.
	Env map[string]string
}

// stdinName stands for "-" in messages.
const stdinName = "<stdin>"

// Load parses, interpolates (${VAR:-default} etc.) and validates the compose
// files and converts them to the StackSpec of stack name.
//
// The warnings are lines as Docker prints them ("Ignoring unsupported
// options: build, container_name"). Errors about the files' content are
// *Error values that name the file and the key, and match ErrInvalid.
func Load(name string, opts Options) (*typesv1.StackSpec, []string, error) {
	if err := ValidateName(name); err != nil {
		return nil, nil, err
	}
	l, err := newLoading(name, opts)
	if err != nil {
		return nil, nil, err
	}
	ctx := context.Background()
	for _, f := range l.files {
		if err := l.checkFile(ctx, f); err != nil {
			return nil, nil, err
		}
	}
	p, err := l.project(ctx)
	if err != nil {
		return nil, nil, l.attribute(err)
	}
	spec, n, err := convert(name, p, os.ReadFile)
	if err != nil {
		return nil, nil, l.attribute(err)
	}
	l.notes.merge(n)
	return spec, l.notes.lines(), nil
}

// composeFile is one -c file.
type composeFile struct {
	// display is the name as the user gave it.
	display string
	// abs is the name compose-go knows it by.
	abs     string
	content []byte
	// model is the file's own model, before interpolation and merging: the
	// file that sets a key is the one an error about the key names.
	model map[string]any
}

// loading is one Load call.
type loading struct {
	files      []*composeFile
	workingDir string
	env        map[string]string
	// projectName is what compose-go calls the project. It must be a valid
	// compose project name, which a stack name need not be; Convert tells
	// implicit object names by it.
	projectName string
	notes       *notes
}

func newLoading(name string, opts Options) (*loading, error) {
	if len(opts.Files) == 0 {
		return nil, errors.New("no compose file given")
	}
	l := &loading{projectName: loader.NormalizeProjectName(name), notes: newNotes()}
	wd := opts.WorkingDir
	if wd == "" {
		if opts.Files[0] == "-" {
			cwd, err := os.Getwd()
			if err != nil {
				return nil, fmt.Errorf("working directory: %w", err)
			}
			wd = cwd
		} else {
			wd = filepath.Dir(opts.Files[0])
		}
	}
	abs, err := filepath.Abs(wd)
	if err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	}
	l.workingDir = abs

	stdinRead := false
	for _, name := range opts.Files {
		f := &composeFile{display: name}
		if name == "-" {
			if stdinRead {
				return nil, errors.New(`"-" (stdin) given more than once`)
			}
			if opts.Stdin == nil {
				return nil, errors.New(`"-" given but there is no stdin to read`)
			}
			stdinRead = true
			f.display = stdinName
			// A name no real file has, so that it can be told apart in
			// compose-go's messages.
			f.abs = filepath.Join(l.workingDir, stdinName)
			if f.content, err = io.ReadAll(opts.Stdin); err != nil {
				return nil, fmt.Errorf("read compose file from stdin: %w", err)
			}
		} else {
			if f.abs, err = filepath.Abs(name); err != nil {
				return nil, fmt.Errorf("compose file %s: %w", name, err)
			}
			if f.content, err = os.ReadFile(name); err != nil {
				return nil, fmt.Errorf("read compose file: %w", err)
			}
		}
		if f.content == nil {
			f.content = []byte{} // nil makes compose-go read the file itself
		}
		l.files = append(l.files, f)
	}

	envDir := l.workingDir
	if opts.Files[0] != "-" {
		envDir = filepath.Dir(l.files[0].abs)
	}
	if l.env, err = interpolationEnv(filepath.Join(envDir, ".env"), opts.Env); err != nil {
		return nil, err
	}
	return l, nil
}

// interpolationEnv merges the .env file at path (if there is one) under env.
func interpolationEnv(path string, env map[string]string) (map[string]string, error) {
	out := map[string]string{}
	if info, err := os.Stat(path); err == nil && !info.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		vars, err := dotenv.UnmarshalBytesWithLookup(data, func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		})
		if err != nil {
			return nil, &Error{File: path, Err: err}
		}
		maps.Copy(out, vars)
	}
	maps.Copy(out, env)
	return out, nil
}

func (l *loading) details(files ...*composeFile) types.ConfigDetails {
	cd := types.ConfigDetails{WorkingDir: l.workingDir, Environment: types.Mapping(l.env)}
	for _, f := range files {
		cd.ConfigFiles = append(cd.ConfigFiles, types.ConfigFile{Filename: f.abs, Content: f.content})
	}
	return cd
}

// checkFile parses one file alone, checks its keys and, after
// interpolation, the values compose-go would reject without saying where.
func (l *loading) checkFile(ctx context.Context, f *composeFile) error {
	model, err := loader.LoadModelWithContext(ctx, l.details(f), func(o *loader.Options) {
		// The file as written: no interpolation (so that a missing
		// variable is reported once, below, with its file), no merging
		// of extends or include (both are refused), no defaults.
		o.SkipInterpolation = true
		o.SkipValidation = true
		o.SkipNormalization = true
		o.SkipExtends = true
		o.SkipInclude = true
		o.SkipDefaultValues = true
		o.SkipConsistencyCheck = true
		o.ResolvePaths = false
		o.SetProjectName(l.projectName, true)
	})
	if err != nil {
		return &Error{File: f.display, Err: l.clean(err)}
	}
	f.model = model

	w := keyWalker{notes: l.notes, strict: true}
	if err := w.walk(model, tree.NewPath()); err != nil {
		return withFile(err, f.display)
	}

	interpolated, err := interp.Interpolate(model, interp.Options{
		LookupValue: l.lookup,
		Substitute:  l.substitute,
	})
	if err != nil {
		return withFile(interpolationError(err), f.display)
	}
	return withFile(checkValues(interpolated), f.display)
}

// project loads all files together, as compose merges them.
func (l *loading) project(ctx context.Context) (*types.Project, error) {
	cd := l.details(l.files...)
	opt := func(o *loader.Options) {
		// Schema validation runs below instead: compose-go's would log
		// "the attribute `version` is obsolete" for every stack file
		// written for Docker, all of which have one.
		o.SkipValidation = true
		// Convert checks references itself, naming the key.
		o.SkipConsistencyCheck = true
		o.SkipExtends = true
		o.SkipInclude = true
		o.SetProjectName(l.projectName, true)
		in := *o.Interpolate // keeps compose-go's type casts
		in.LookupValue = l.lookup
		in.Substitute = l.substitute
		o.Interpolate = &in
		// Services under a profile are left out unless COMPOSE_PROFILES
		// names it, as compose does.
		o.Profiles = profiles(l.env)
	}
	model, err := loader.LoadModelWithContext(ctx, cd, opt)
	if err != nil {
		return nil, l.compose(err)
	}
	delete(model, "version")
	if err := schema.Validate(model); err != nil {
		return nil, schemaError(err)
	}
	if err := validation.Validate(model); err != nil {
		return nil, colonError(err)
	}
	p, err := loader.ModelToProject(model, loader.ToOptions(&cd, []func(*loader.Options){opt}), cd)
	if err != nil {
		return nil, l.compose(err)
	}
	for _, f := range l.files {
		p.ComposeFiles = append(p.ComposeFiles, f.abs)
	}
	return p, nil
}

func (l *loading) lookup(k string) (string, bool) {
	v, ok := l.env[k]
	return v, ok
}

// substitute is compose-go's, except that an unset variable becomes a
// warning line instead of a log message on stderr (compose-go logs through
// logrus; the caller decides where warnings go).
func (l *loading) substitute(s string, mapping template.Mapping) (string, error) {
	return template.SubstituteWithOptions(s, mapping, template.WithoutLogging,
		template.WithReplacementFunction(func(sub string, m template.Mapping, cfg *template.Config) (string, error) {
			var missing string
			spy := func(k string) (string, bool) {
				v, ok := m(k)
				if !ok {
					missing = k
				}
				return v, ok
			}
			v, applied, err := template.DefaultReplacementAppliedFunc(sub, spy, cfg)
			if err == nil && !applied && missing != "" {
				l.notes.warnf("The %q variable is not set. Defaulting to a blank string.", missing)
			}
			return v, err
		}))
}

func profiles(env map[string]string) []string {
	var out []string
	for _, s := range strings.Split(env["COMPOSE_PROFILES"], ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// attribute names the file that set the key of err: the last file (later
// files override) whose own model holds the longest part of the key.
func (l *loading) attribute(err error) error {
	var e *Error
	if !errors.As(err, &e) || e.File != "" {
		return err
	}
	parts := e.keyParts()
	best, depth := "", 0
	for _, f := range l.files {
		if d := depthIn(f.model, parts); d > 0 && d >= depth {
			best, depth = f.display, d
		}
	}
	if best == "" {
		best = l.files[0].display
		if len(l.files) > 1 && len(parts) == 0 {
			best = l.allFiles()
		}
	}
	e.File = best
	return err
}

func (l *loading) allFiles() string {
	var names []string
	for _, f := range l.files {
		names = append(names, f.display)
	}
	return strings.Join(names, ", ")
}

// depthIn is how many leading parts of a key path exist in model.
func depthIn(model map[string]any, parts []string) int {
	var cur any = model
	for i, k := range parts {
		m, ok := cur.(map[string]any)
		if !ok {
			return i
		}
		if cur, ok = m[k]; !ok {
			return i
		}
	}
	return len(parts)
}

func withFile(err error, file string) error {
	var e *Error
	if errors.As(err, &e) && e.File == "" {
		e.File = file
	}
	return err
}

// clean replaces compose-go's absolute file names with the user's.
func (l *loading) clean(err error) error {
	msg := err.Error()
	for _, f := range l.files {
		msg = strings.ReplaceAll(msg, "failed to parse "+f.abs+": ", "")
		msg = strings.ReplaceAll(msg, f.abs, f.display)
	}
	return errors.New(msg)
}

var (
	interpolationRE = regexp.MustCompile(`(?s)^error while interpolating (\S+): (.*)$`)
	badTemplateRE   = regexp.MustCompile(`(?s)^invalid interpolation format for (\S+)\.\n(.*)$`)
	decodeRE        = regexp.MustCompile(`'([^']+)' (.*)`)
	indexRE         = regexp.MustCompile(`\[(\d+)\]`)
	nameRE          = regexp.MustCompile(`\[([^\]]+)\]`)
)

// interpolationError reports the first failed interpolation (compose-go
// joins one per value, sorted by key).
func interpolationError(err error) error {
	first := err
	if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) > 0 {
		first = j.Unwrap()[0]
	}
	msg := first.Error()
	if m := interpolationRE.FindStringSubmatch(msg); m != nil {
		return &Error{Key: m[1], Err: errors.New(m[2])}
	}
	if m := badTemplateRE.FindStringSubmatch(msg); m != nil {
		// m[2] is compose-go's advice, then the template on the last line.
		lines := strings.Split(m[2], "\n")
		return &Error{Key: m[1], Err: fmt.Errorf("invalid interpolation format %q (write a literal $ as $$)", lines[len(lines)-1])}
	}
	return &Error{Err: first}
}

// schemaError turns compose-go's "services.web.x must be a string" into a
// keyed error.
func schemaError(err error) error {
	msg := err.Error()
	key, rest, ok := strings.Cut(msg, " ")
	if !ok || key == "" {
		return &Error{Err: errors.New(strings.TrimSpace(msg))}
	}
	return &Error{Key: key, Err: errors.New(rest)}
}

// colonError turns compose-go's "services.web.x: problem" into a keyed error.
func colonError(err error) error {
	key, rest, ok := strings.Cut(err.Error(), ": ")
	if !ok || strings.ContainsAny(key, " \n") {
		return &Error{Err: err}
	}
	return &Error{Key: key, Err: errors.New(rest)}
}

// compose rewrites a compose-go error from merging or decoding the files.
// Decoding errors read "'services[web].deploy.replicas' expected …".
func (l *loading) compose(err error) error {
	if msg := err.Error(); interpolationRE.MatchString(msg) || badTemplateRE.MatchString(msg) {
		// Type casts of interpolated values fail here, not per file.
		return interpolationError(err)
	}
	err = l.clean(err)
	msg := err.Error()
	if strings.HasPrefix(msg, "decoding failed") {
		if m := decodeRE.FindStringSubmatch(msg); m != nil {
			key := indexRE.ReplaceAllString(m[1], "")
			key = nameRE.ReplaceAllString(key, ".$1")
			return &Error{Key: key, Err: errors.New(strings.TrimSpace(m[2]))}
		}
	}
	return colonError(err)
}
