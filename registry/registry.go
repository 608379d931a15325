// Package registry serves a node's image store over the OCI distribution
// API, read-only, so that an agent that lacks an image pulls it from a
// manager with a registry client (go-containerregistry's remote package)
// instead of needing a registry every node can reach, as Docker swarm does.
//
// Only GET and HEAD of /v2/, /v2/<name>/manifests/<tag|digest> and
// /v2/<name>/blobs/<digest> are served. Images get into the store through
// shoal's own `image load` and `image import`, never by push: every write
// method is answered 405. There is no per-repository access control: the
// listener admits nodes of the swarm only (Serve insists on verified
// client certificates), and every node may read every image, so a blob or
// a manifest by digest is served under any repository name.
package registry

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/runtime/image"
)

// Store is what the registry reads of an image store; *image.Store is one.
type Store interface {
	// Manifest returns the manifest of the image tagged ref ("name:tag").
	Manifest(ref string) (v1.Descriptor, []byte, error)
	// ManifestByDigest returns the manifest with that digest, if it is the
	// manifest of an image in the store.
	ManifestByDigest(digest string) (v1.Descriptor, []byte, error)
	// OpenBlob opens a blob an image in the store references.
	OpenBlob(digest string) (io.ReadSeekCloser, int64, error)
}

var _ Store = (*image.Store)(nil)

// The grammar of repository names, tags and digests in request paths.
// Names and tags are those of distribution/reference; digests are sha256
// only, because that is all the store keeps.
var (
	componentRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRe       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestRe    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

const maxNameLen = 255

// readOnlyMsg tells a client that tried to push where images come from.
const readOnlyMsg = "this registry is read-only: put images on a manager with `shoal image load` or `shoal image import`"

type handler struct {
	store Store
	log   *slog.Logger
}

// New returns a handler serving s read-only over the OCI distribution API.
//
// A repository name and tag map to the store's tag the way the store names
// them (Docker's familiar form): /v2/shoal-e2e/web/manifests/latest is
// "shoal-e2e/web:latest", and /v2/library/nginx/manifests/1 is "nginx:1".
// A store tag with a registry host keeps the host as the first component
// (/v2/example.com/a/b/manifests/v1 is "example.com/a/b:v1"); a host with a
// port cannot be spelled in a repository name, so such images are served by
// digest only.
func New(s Store, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &handler{store: s, log: log.With("component", "registry")}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	sw.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	h.route(sw, r)
	if sw.status == 0 {
		sw.status = http.StatusOK // headers only, as for HEAD /v2/
	}

	level := slog.LevelDebug
	if sw.status >= 500 {
		level = slog.LevelError
	}
	attrs := []any{"http.method", r.Method, "http.path", r.URL.Path, "http.status", sw.status,
		"http.bytes", sw.n, "duration", time.Since(start)}
	if r.TLS != nil {
		if n, ok := ca.PeerIdentity(*r.TLS); ok {
			attrs = append(attrs, "node.id", n.NodeID)
		}
	}
	h.log.Log(r.Context(), level, "registry request", attrs...)
}

func (h *handler) route(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, r, http.StatusMethodNotAllowed, codeUnsupported, readOnlyMsg)
		return
	}
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		// The version check: 200 says "distribution API v2, no auth".
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		if r.Method == http.MethodGet {
			io.WriteString(w, "{}")
		}
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) < 3 {
		writeError(w, r, http.StatusNotFound, codeUnsupported, "not an endpoint of this registry: "+p)
		return
	}
	kind, ref := parts[len(parts)-2], parts[len(parts)-1]
	name := strings.Join(parts[:len(parts)-2], "/")
	if kind != "manifests" && kind != "blobs" {
		writeError(w, r, http.StatusNotFound, codeUnsupported, "not an endpoint of this registry: "+p)
		return
	}
	if !validName(name) {
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, "invalid repository name "+strconv.Quote(name))
		return
	}
	if kind == "blobs" {
		h.blob(w, r, name, ref)
		return
	}
	h.manifest(w, r, name, ref)
}

func validName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for c := range strings.SplitSeq(name, "/") {
		if !componentRe.MatchString(c) {
			return false
		}
	}
	return true
}

func (h *handler) manifest(w http.ResponseWriter, r *http.Request, name, ref string) {
	var (
		desc v1.Descriptor
		data []byte
		err  error
		what string
	)
	switch {
	case strings.Contains(ref, ":"):
		if !digestRe.MatchString(ref) {
			writeError(w, r, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(ref)+": only sha256:<64 lower-case hex digits> is supported")
			return
		}
		what = name + "@" + ref
		desc, data, err = h.store.ManifestByDigest(ref)
	case tagRe.MatchString(ref):
		what = name + ":" + ref
		desc, data, err = h.store.Manifest(what)
	default:
		writeError(w, r, http.StatusBadRequest, codeTagInvalid, "invalid tag "+strconv.Quote(ref))
		return
	}
	switch {
	case errors.Is(err, image.ErrNotFound):
		writeError(w, r, http.StatusNotFound, codeManifestUnknown, "manifest unknown: no image "+what+" on this node")
		return
	case errors.Is(err, image.ErrInvalid):
		writeError(w, r, http.StatusBadRequest, codeNameInvalid, err.Error())
		return
	case err != nil:
		h.log.Error("read manifest", "image.ref", what, "err", err)
		writeError(w, r, http.StatusInternalServerError, codeUnknown, "cannot read manifest of "+what)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", string(desc.MediaType))
	hd.Set("Content-Length", strconv.Itoa(len(data)))
	hd.Set("Docker-Content-Digest", desc.Digest.String())
	hd.Set("ETag", strconv.Quote(desc.Digest.String()))
	if r.Method == http.MethodGet {
		w.Write(data)
	}
}

func (h *handler) blob(w http.ResponseWriter, r *http.Request, name, digest string) {
	if !digestRe.MatchString(digest) {
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(digest)+": only sha256:<64 lower-case hex digits> is supported")
		return
	}
	f, _, err := h.store.OpenBlob(digest)
	switch {
	case errors.Is(err, image.ErrNotFound):
		writeError(w, r, http.StatusNotFound, codeBlobUnknown, "blob unknown: no blob "+digest+" on this node")
		return
	case errors.Is(err, image.ErrInvalid):
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, err.Error())
		return
	case err != nil:
		h.log.Error("open blob", "image.name", name, "blob.digest", digest, "err", err)
		writeError(w, r, http.StatusInternalServerError, codeUnknown, "cannot read blob "+digest)
		return
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Docker-Content-Digest", digest)
	hd.Set("ETag", strconv.Quote(digest))
	// Blobs never change, so conditional and range requests (a resumed
	// download) are safe; ServeContent answers them and HEAD.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// statusWriter records what a handler answered, for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// ReadFrom keeps sendfile for blobs: http.ServeContent copies with
// io.Copy, which would otherwise see only Write.
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := io.Copy(w.ResponseWriter, r)
	w.n += n
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
