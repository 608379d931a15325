package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Format keys, as docker/cli's formatter has them.
const (
	tableFormatKey  = "table"
	rawFormatKey    = "raw"
	prettyFormatKey = "pretty"
	jsonFormatKey   = "json"

	defaultQuietFormat = "{{.ID}}"
)

// listFormat is a --format value after defaults are applied: "table …",
// a plain template, or "json".
type listFormat string

func (f listFormat) isTable() bool { return strings.HasPrefix(string(f), tableFormatKey) }

// template turns the format into template text the way docker/cli does:
// "json" is one JSON object per line, "table " is cut off, and the
// escapes \t and \n typed on a shell are made real.
func (f listFormat) template() string {
	out := string(f)
	switch out {
	case tableFormatKey:
		return ""
	case jsonFormatKey:
		return "{{json .}}"
	}
	out = strings.TrimPrefix(out, tableFormatKey)
	out = strings.Trim(out, " ")
	return strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(out)
}

// chooseFormat applies docker's rules: empty or "table" means the default
// table (or only IDs with -q), "raw" a key: value listing, anything else is
// the user's template.
func chooseFormat(source string, quiet bool, table, raw, quietRaw string) listFormat {
	switch source {
	case "", tableFormatKey:
		if quiet {
			return defaultQuietFormat
		}
		return listFormat(table)
	case rawFormatKey:
		if quiet {
			return listFormat(quietRaw)
		}
		return listFormat(raw)
	}
	return listFormat(source)
}

// templateFuncs are docker's template helpers.
var templateFuncs = template.FuncMap{
	"json":     templateJSON,
	"split":    strings.Split,
	"join":     strings.Join,
	"title":    titleCase,
	"lower":    strings.ToLower,
	"upper":    strings.ToUpper,
	"pad":      padWithSpace,
	"truncate": truncateWithLength,
}

// headerFuncs keep the header row intact while the row template is run over
// the header map (e.g. {{upper .Name}} must not turn NAME into anything else).
var headerFuncs = template.FuncMap{
	"json":     func(v string) string { return v },
	"split":    func(v string, _ string) string { return v },
	"join":     func(v string, _ string) string { return v },
	"title":    func(v string) string { return v },
	"lower":    func(v string) string { return v },
	"upper":    func(v string) string { return v },
	"truncate": func(v string, _ int) string { return v },
}

func parseTemplate(text string) (*template.Template, error) {
	t, err := template.New("").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("template parsing error: %v", err)
	}
	return t, nil
}

// titleCase upper-cases the first letter of each word (strings.Title,
// which docker uses, is deprecated).
func titleCase(s string) string {
	out := []rune(s)
	for i, r := range out {
		if i == 0 || unicode.IsSpace(out[i-1]) || out[i-1] == '-' || out[i-1] == '_' {
			out[i] = unicode.ToTitle(r)
		}
	}
	return string(out)
}

func padWithSpace(source string, prefix, suffix int) string {
	if source == "" {
		return source
	}
	return strings.Repeat(" ", prefix) + source + strings.Repeat(" ", suffix)
}

func truncateWithLength(source string, length int) string {
	if len(source) < length {
		return source
	}
	return source[:length]
}

// templateJSON is the template's json helper. Protobuf messages go through
// protojson so that enums and timestamps read as text, not numbers.
func templateJSON(v any) (string, error) {
	if m, ok := v.(proto.Message); ok {
		b, err := protojson.Marshal(m)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSpace(buf.String()), nil
}

// writeList renders rows with a list format. Tables get a header row (made
// by running the same template over header, so custom table formats get
// matching titles) and are aligned as docker aligns them.
func writeList(w io.Writer, f listFormat, header map[string]string, rows []any) error {
	tmpl, err := parseTemplate(f.template())
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, r := range rows {
		if err := tmpl.Execute(&buf, r); err != nil {
			return fmt.Errorf("template parsing error: %v", err)
		}
		buf.WriteByte('\n')
	}
	if !f.isTable() {
		_, err := w.Write(buf.Bytes())
		return err
	}
	tw := tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)
	if err := tmpl.Funcs(headerFuncs).Execute(tw, header); err != nil {
		return fmt.Errorf("template parsing error: %v", err)
	}
	_, _ = tw.Write([]byte{'\n'})
	_, _ = tw.Write(buf.Bytes())
	return tw.Flush()
}

// marshalRow makes a row's JSON from its exported no-argument methods, so
// `--format json` shows exactly the fields a template can use, under the
// same names (docker/cli's formatter.MarshalJSON).
func marshalRow(row any) ([]byte, error) {
	v := reflect.ValueOf(row)
	t := v.Type()
	m := make(map[string]any)
	for i := 0; i < v.NumMethod(); i++ {
		meth := t.Method(i)
		fv := v.Method(i)
		if fv.Type().NumIn() != 0 || fv.Type().NumOut() != 1 {
			continue
		}
		m[meth.Name] = fv.Call(nil)[0].Interface()
	}
	return json.Marshal(m)
}

// truncateID shortens an id to docker's 12 characters, dropping a
// "sha256:" prefix.
func truncateID(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		id = id[i+1:]
	}
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// ellipsis cuts s to max runes, the last one being "…".
func ellipsis(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	if max == 1 {
		return string(r[0])
	}
	return string(r[:max-1]) + "…"
}

// capitalizeFirst is docker's PrettyPrint: "RUNNING" → "Running".
func capitalizeFirst(s string) string {
	switch len(s) {
	case 0:
		return s
	case 1:
		return strings.ToLower(s)
	}
	return strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
}

// humanDuration is go-units' HumanDuration, word for word, so that ages
// read as in docker ("Less than a second", "About a minute", "3 hours").
func humanDuration(d time.Duration) string {
	if seconds := int(d.Seconds()); seconds < 1 {
		return "Less than a second"
	} else if seconds == 1 {
		return "1 second"
	} else if seconds < 60 {
		return fmt.Sprintf("%d seconds", seconds)
	} else if minutes := int(d.Minutes()); minutes == 1 {
		return "About a minute"
	} else if minutes < 60 {
		return fmt.Sprintf("%d minutes", minutes)
	} else if hours := int(d.Hours() + 0.5); hours == 1 {
		return "About an hour"
	} else if hours < 48 {
		return fmt.Sprintf("%d hours", hours)
	} else if hours < 24*7*2 {
		return fmt.Sprintf("%d days", hours/24)
	} else if hours < 24*30*2 {
		return fmt.Sprintf("%d weeks", hours/24/7)
	} else if hours < 24*365*2 {
		return fmt.Sprintf("%d months", hours/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}

// humanSize is go-units' HumanSizeWithPrecision with decimal units, as
// `docker image ls` prints sizes ("187MB").
func humanSize(size float64, precision int) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"}
	i := 0
	for size >= 1000 && i < len(units)-1 {
		size /= 1000
		i++
	}
	return fmt.Sprintf("%.*g%s", precision, size, units[i])
}

// naturalLess orders "web.2" before "web.10", as docker's sortorder does.
func naturalLess(a, b string) bool {
	for a != "" && b != "" {
		ca, cb := a[0], b[0]
		if isDigit(ca) && isDigit(cb) {
			na, ra := leadingDigits(a)
			nb, rb := leadingDigits(b)
			ta, tb := strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if len(ta) != len(tb) {
				return len(ta) < len(tb)
			}
			if ta != tb {
				return ta < tb
			}
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			a, b = ra, rb
			continue
		}
		if ca != cb {
			return ca < cb
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// familiarImage shortens an image reference for tables as docker does:
// no docker.io/library/ prefix and no digest when a tag is present.
func familiarImage(image string) string {
	name, digest, hasDigest := strings.Cut(image, "@")
	if hasDigest && strings.Contains(lastPathElem(name), ":") {
		image = name
	} else if hasDigest {
		image = name + "@" + digest
	}
	image = strings.TrimPrefix(image, "docker.io/library/")
	image = strings.TrimPrefix(image, "docker.io/")
	return image
}

func lastPathElem(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}
