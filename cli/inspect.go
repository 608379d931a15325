package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// inspectJSON is how objects are shown by `inspect`: every field, enum
// names as text, camelCase keys (protojson's stable choice).
var inspectJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// inspect prints objects as `docker inspect` does: a JSON array indented by
// four spaces, or one line per object with -f/--format. Refs that are not
// found are reported after the found objects are printed, and make the
// exit code 1.
func (a *App) inspect(refs []string, format string, get func(string) (proto.Message, error)) error {
	var (
		objs []proto.Message
		errs []error
	)
	for _, ref := range refs {
		m, err := get(ref)
		if err != nil {
			if isConnectError(err) {
				return err
			}
			errs = append(errs, err)
			continue
		}
		objs = append(objs, m)
	}
	if format == "" || format == jsonFormatKey {
		if err := writeJSONArray(a, objs); err != nil {
			return err
		}
		return joinErrors(errs)
	}
	tmpl, err := parseTemplate(listFormat(format).template())
	if err != nil {
		return err
	}
	for _, m := range objs {
		var buf bytes.Buffer
		// Go field names first ({{.Spec.Annotations.Name}}); if the
		// template names JSON keys instead ({{.spec.annotations.name}}),
		// retry over the JSON form, as docker/cli falls back to raw JSON.
		if err := tmpl.Execute(&buf, m); err != nil {
			raw, merr := inspectJSON.Marshal(m)
			if merr != nil {
				return merr
			}
			var generic any
			if jerr := json.Unmarshal(raw, &generic); jerr != nil {
				return jerr
			}
			buf.Reset()
			if err2 := tmpl.Execute(&buf, generic); err2 != nil {
				return fmt.Errorf("template parsing error: %v", err)
			}
		}
		buf.WriteByte('\n')
		if _, err := a.Stdout.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return joinErrors(errs)
}

func writeJSONArray(a *App, objs []proto.Message) error {
	var raw bytes.Buffer
	raw.WriteByte('[')
	for i, m := range objs {
		if i > 0 {
			raw.WriteByte(',')
		}
		b, err := inspectJSON.Marshal(m)
		if err != nil {
			return err
		}
		raw.Write(b)
	}
	raw.WriteByte(']')
	var out bytes.Buffer
	if err := json.Indent(&out, raw.Bytes(), "", "    "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err := a.Stdout.Write(out.Bytes())
	return err
}

// inspectPretty renders each object with a human template (--pretty).
// Objects are separated by a blank line, as docker separates them.
func (a *App) inspectPretty(refs []string, get func(string) (proto.Message, error), text string, wrap func(proto.Message) any) error {
	tmpl, err := parseTemplate(text)
	if err != nil {
		return err
	}
	var errs []error
	for i, ref := range refs {
		m, err := get(ref)
		if err != nil {
			if isConnectError(err) {
				return err
			}
			errs = append(errs, err)
			continue
		}
		if i > 0 {
			fmt.Fprintln(a.Stdout)
		}
		var buf bytes.Buffer
		if err := tmpl.Execute(&buf, wrap(m)); err != nil {
			return fmt.Errorf("template parsing error: %v", err)
		}
		if _, err := a.Stdout.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return joinErrors(errs)
}

// prettyTime is how docker's pretty inspect prints times.
func prettyTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339Nano)
}
