package nodeapi

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/image"
)

// acceptedChanges are the Dockerfile instructions `image import -c` takes:
// those of Docker's --change that set image config fields the store keeps.
// (VOLUME, HEALTHCHECK and ONBUILD have no field in image.Config.)
var acceptedChanges = []string{"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "WORKDIR"}

// parseChanges applies `docker import --change` instructions, in order,
// to an empty image config. Errors match errInvalid and name the change.
//
// As in a Dockerfile, CMD and ENTRYPOINT take the JSON form
// (["/bin/app","-x"]) or the shell form (run by /bin/sh -c); ENV and LABEL
// take key=value pairs (quotes and backslashes as in a Dockerfile) or the
// legacy "key value". $VARIABLE references are not expanded: the config
// they would come from is the empty one of an import.
func parseChanges(changes []string) (*image.Config, error) {
	cfg := &image.Config{}
	for _, ch := range changes {
		if err := applyChange(cfg, ch); err != nil {
			return nil, fmt.Errorf("%w: invalid change %q: %v", errInvalid, ch, err)
		}
	}
	return cfg, nil
}

func applyChange(cfg *image.Config, change string) error {
	change = strings.TrimSpace(change)
	if change == "" {
		return fmt.Errorf("empty change: expected an instruction such as CMD")
	}
	instr, rest := change, ""
	if i := strings.IndexFunc(change, unicode.IsSpace); i >= 0 {
		instr, rest = change[:i], strings.TrimSpace(change[i:])
	}
	instr = strings.ToUpper(instr)
	switch instr {
	case "CMD", "ENTRYPOINT":
		if rest == "" {
			return fmt.Errorf("%s requires at least one argument", instr)
		}
		args := commandForm(rest)
		if instr == "CMD" {
			cfg.Cmd = args
		} else {
			cfg.Entrypoint = args
		}
	case "ENV":
		kvs, err := keyValues(instr, rest)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			cfg.Env = setEnv(cfg.Env, kv[0], kv[1])
		}
	case "LABEL":
		kvs, err := keyValues(instr, rest)
		if err != nil {
			return err
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range kvs {
			cfg.Labels[kv[0]] = kv[1]
		}
	case "EXPOSE":
		words := strings.Fields(rest)
		if len(words) == 0 {
			return fmt.Errorf("EXPOSE requires at least one argument")
		}
		for _, w := range words {
			ports, err := exposedPorts(w)
			if err != nil {
				return err
			}
			for _, p := range ports {
				if !slices.Contains(cfg.ExposedPorts, p) {
					cfg.ExposedPorts = append(cfg.ExposedPorts, p)
				}
			}
		}
	case "USER":
		v := unquote(rest)
		if v == "" || strings.ContainsFunc(v, unicode.IsSpace) {
			return fmt.Errorf("USER requires exactly one argument")
		}
		cfg.User = v
	case "WORKDIR":
		v := unquote(rest)
		if v == "" {
			return fmt.Errorf("WORKDIR requires exactly one argument")
		}
		// A relative WORKDIR continues from the previous one, as in a
		// Dockerfile.
		if !path.IsAbs(v) {
			v = path.Join("/", cfg.WorkingDir, v)
		}
		cfg.WorkingDir = path.Clean(v)
	case "STOPSIGNAL":
		v := unquote(rest)
		if _, err := runtime.ParseSignal(v); err != nil {
			return fmt.Errorf("STOPSIGNAL: invalid signal %q", v)
		}
		cfg.StopSignal = v
	default:
		return fmt.Errorf("%s is not a valid change command; accepted: %s", instr, strings.Join(acceptedChanges, ", "))
	}
	return nil
}

// commandForm reads CMD's and ENTRYPOINT's argument: a JSON array of
// strings is the exec form; anything else (Docker falls back the same way
// when the JSON does not parse) is a shell command.
func commandForm(s string) []string {
	if strings.HasPrefix(s, "[") {
		var args []string
		if err := json.Unmarshal([]byte(s), &args); err == nil {
			return args
		}
	}
	return []string{"/bin/sh", "-c", s}
}

// keyValues reads ENV's and LABEL's arguments: key=value words, or the
// legacy "key value with spaces" when the first word has no "=".
func keyValues(instr, rest string) ([][2]string, error) {
	words, err := splitWords(rest)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("%s requires at least one argument", instr)
	}
	if !strings.Contains(words[0], "=") {
		// rest starts with the first word: both come from the trimmed line.
		val := strings.TrimSpace(rest[len(words[0]):])
		if val == "" {
			return nil, fmt.Errorf("%s must have two arguments", instr)
		}
		return [][2]string{{unquote(words[0]), unquote(val)}}, nil
	}
	out := make([][2]string, 0, len(words))
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			return nil, fmt.Errorf("%s names must be followed by =value: %q", instr, w)
		}
		k = unquote(k)
		if k == "" {
			return nil, fmt.Errorf("%s names can not be blank", instr)
		}
		out = append(out, [2]string{k, unquote(v)})
	}
	return out, nil
}

// splitWords splits s at whitespace outside quotes, keeping the quotes
// and backslashes in the words for unquote.
func splitWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		quote rune
		esc   bool
		in    bool
	)
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case r == '\\' && quote != '\'':
			esc = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case unicode.IsSpace(r):
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
			continue
		}
		cur.WriteRune(r)
		in = true
	}
	if quote != 0 {
		return nil, fmt.Errorf("unmatched %c quote", quote)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// unquote removes quotes and backslash escapes as a Dockerfile does:
// nothing is special inside single quotes, and inside double quotes a
// backslash escapes only ", \ and $. Whitespace is kept as written.
func unquote(s string) string {
	var b strings.Builder
	var quote rune
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == '\'':
			if r == '\'' {
				quote = 0
				continue
			}
		case r == '\\' && i+1 < len(rs) && (quote == 0 || strings.ContainsRune(`"\$`, rs[i+1])):
			i++
			r = rs[i]
		case quote == '"':
			if r == '"' {
				quote = 0
				continue
			}
		case r == '"' || r == '\'':
			quote = r
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// exposedPorts reads one EXPOSE word: "80", "80/udp" or a range
// "8000-8002/tcp"; the protocol defaults to tcp.
func exposedPorts(w string) ([]string, error) {
	ports, proto, ok := strings.Cut(w, "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return nil, fmt.Errorf("EXPOSE %s: invalid protocol %q (tcp, udp or sctp)", w, proto)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		hi = lo
	}
	start, err1 := strconv.ParseUint(lo, 10, 16)
	end, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || start == 0 || end < start {
		return nil, fmt.Errorf("EXPOSE %s: invalid port", w)
	}
	var out []string
	for p := start; p <= end; p++ {
		out = append(out, strconv.FormatUint(p, 10)+"/"+proto)
	}
	return out, nil
}

// setEnv sets key in a KEY=VALUE list, replacing an earlier value in place.
func setEnv(env []string, key, val string) []string {
	for i, e := range env {
		if k, _, _ := strings.Cut(e, "="); k == key {
			env[i] = key + "=" + val
			return env
		}
	}
	return append(env, key+"="+val)
}
