package image

import (
	"regexp"
	"strings"
)

// The reference grammar of distribution/reference, which Docker uses: a
// lowercase path of components, optionally behind a registry host, and a tag.
var (
	domainRe = regexp.MustCompile(`^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$`)
	pathRe   = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRe    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hexRe    = regexp.MustCompile(`^[0-9a-f]+$`)
)

const defaultTag = "latest"

// parseRef validates "name[:tag]" and returns it in the familiar form Docker
// shows ("docker.io/library/foo" is "foo"), with the tag defaulted to latest,
// so that every spelling of one tag maps to one key.
func parseRef(ref string) (string, error) {
	if ref == "" {
		return "", invalidf("invalid reference format: empty reference")
	}
	if strings.Contains(ref, "@") {
		return "", invalidf("invalid reference format: %s: digest references are not supported here", ref)
	}
	name, tag := ref, defaultTag
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	if !tagRe.MatchString(tag) {
		return "", invalidf("invalid reference format: %s: bad tag %q", ref, tag)
	}
	if len(name) == 64 && hexRe.MatchString(name) {
		// It would be indistinguishable from an image ID, as Docker says.
		return "", invalidf("invalid reference format: %s: repository name cannot be a 64-byte hexadecimal string", ref)
	}
	if len(name) > 255 {
		return "", invalidf("invalid reference format: %s: name longer than 255 characters", ref)
	}
	parts := strings.Split(name, "/")
	domain := ""
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		domain, parts = parts[0], parts[1:]
		if !domainRe.MatchString(domain) {
			return "", invalidf("invalid reference format: %s: bad registry host %q", ref, domain)
		}
	}
	for _, p := range parts {
		if !pathRe.MatchString(p) {
			return "", invalidf("invalid reference format: %s: repository name must be lowercase letters, digits and separators", ref)
		}
	}
	// Familiar form: Docker Hub names lose their registry and "library/".
	if domain == "docker.io" || domain == "index.docker.io" {
		domain = ""
	}
	if domain == "" && len(parts) == 2 && parts[0] == "library" {
		parts = parts[1:]
	}
	name = strings.Join(parts, "/")
	if domain != "" {
		name = domain + "/" + name
	}
	return name + ":" + tag, nil
}

// isTagOnly reports whether an OCI ref.name annotation holds only a tag
// ("v1") rather than a full reference ("foo:v1", "example.com/foo").
func isTagOnly(s string) bool {
	return !strings.ContainsAny(s, ":/") && tagRe.MatchString(s)
}
