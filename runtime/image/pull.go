package image

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PullOptions says where and how Pull fetches an image.
type PullOptions struct {
	// Registry is the "host:port" to pull from instead of the registry the
	// reference names: a manager's node registry, which serves the images
	// of its store under their store names. "" pulls from the reference's
	// own registry ("host:port/repo:tag"; Docker Hub when it names none).
	Registry string
	// Transport makes the HTTP requests, e.g. with mutual TLS and the
	// node's certificate when pulling from a manager. nil: Go's default
	// transport and the system's roots.
	Transport http.RoundTripper
	// Insecure allows plain HTTP, for an explicit external test registry.
	// Without it Pull speaks HTTPS only, also to loopback and private
	// addresses, which go-containerregistry would otherwise try over plain
	// HTTP as well.
	Insecure bool
}

// errPlainHTTP refuses a plain-HTTP request of a pull that is not
// Insecure.
var errPlainHTTP = errors.New("plain HTTP refused: the pull is not marked insecure")

// errLoadStopped ends the download when Load has stopped reading.
var errLoadStopped = errors.New("load stopped reading")

// Pull fetches the image ref names ("name[:tag]" or "name@sha256:<hex>")
// from a registry and stores it under ref's tag, or untagged for a digest,
// and returns it. A tag or manifest digest already in the store is not
// fetched again, so Pull is a no-op for an image present; an image whose
// config the store has already only gets the tag.
//
// The image goes into the store through Load as an OCI image layout,
// written while it downloads: manifests and digests stay as the registry
// serves them, and a registry is held to everything an archive is (digests,
// diff IDs, paths inside layers). Layers are fetched one after another.
//
// Errors name ref and the registry: "pull web:v9 from 10.0.0.1:2379:
// manifest unknown: ...". An image the registry does not have matches
// ErrNotFound; a malformed ref, registry or image matches ErrInvalid.
func (s *Store) Pull(ctx context.Context, ref string, opts PullOptions) (*Image, error) {
	p, err := parsePullRef(ref)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	if img := s.pulled(p); img != nil {
		return img, nil
	}
	rref, err := p.remote(opts)
	if err != nil {
		if opts.Registry != "" {
			return nil, fmt.Errorf("pull %s from %s: %w", ref, opts.Registry, err)
		}
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	from := rref.Context().RegistryStr()
	if opts.Registry != "" {
		from = opts.Registry
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tr := opts.Transport
	if tr == nil {
		tr = remote.DefaultTransport
	}
	if !opts.Insecure {
		tr = httpsOnly{tr}
	}
	img, err := remote.Image(rref,
		remote.WithContext(ctx),
		remote.WithTransport(tr),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		remote.WithUserAgent("shoal"),
	)
	if err != nil {
		return nil, pullFailed(ref, from, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, pullFailed(ref, from, err)
	}
	if err := checkPulledManifest(m); err != nil {
		return nil, fmt.Errorf("pull %s from %s: %w", ref, from, err)
	}
	if got, err := s.adopt(m.Config.Digest.String(), p.tag); got != nil || err != nil {
		if err != nil {
			return nil, fmt.Errorf("pull %s from %s: %w", ref, from, err)
		}
		return got, nil
	}

	// Load reads the layout as it is written, so no image is ever whole in
	// memory; it spools to disk and validates before anything is stored.
	pr, pw := io.Pipe()
	werrc := make(chan error, 1)
	go func() {
		err := writePulledLayout(pw, img, m, p.tag)
		pw.CloseWithError(err)
		werrc <- err
	}()
	imgs, lerr := s.Load(pr)
	pr.CloseWithError(errLoadStopped)
	ours := parent.Err() == nil
	if lerr != nil {
		cancel() // stop a download Load no longer reads
	}
	werr := <-werrc
	if ours && (errors.Is(werr, errLoadStopped) || (lerr != nil && errors.Is(werr, context.Canceled))) {
		werr = nil // the download failed because it was stopped here
	}
	switch {
	case werr != nil:
		// The download failed, and Load with it: the download's error
		// is the cause.
		return nil, pullFailed(ref, from, werr)
	case lerr != nil:
		return nil, fmt.Errorf("pull %s from %s: %w", ref, from, lerr)
	case len(imgs) != 1 || imgs[0].ID != m.Config.Digest.String():
		return nil, fmt.Errorf("pull %s from %s: stored %d images, want image %s", ref, from, len(imgs), m.Config.Digest)
	}
	return imgs[0], nil
}

// pullRef is a reference as Pull reads it.
type pullRef struct {
	name   string // familiar name without tag: "nginx", "example.com/a/b"
	tag    string // "name:tag" as the store keys it; "" for a digest
	digest string // "sha256:<hex>" for a pull by digest
}

// parsePullRef reads "name[:tag]" or "name[:tag]@sha256:<hex>"; as in
// Docker, a tag beside a digest is ignored.
func parsePullRef(ref string) (pullRef, error) {
	nameTag, digest, byDigest := strings.Cut(ref, "@")
	if byDigest {
		if _, err := parseDigest(digest); err != nil {
			return pullRef{}, err
		}
	}
	full, err := parseRef(nameTag)
	if err != nil {
		return pullRef{}, err
	}
	p := pullRef{name: full[:strings.LastIndex(full, ":")], tag: full, digest: digest}
	if byDigest {
		p.tag = ""
	}
	return p, nil
}

// remote returns the reference to fetch: p itself, or p's name on
// opts.Registry, where a node registry serves the store's names.
func (p pullRef) remote(opts PullOptions) (name.Reference, error) {
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	repo := p.name
	if opts.Registry != "" {
		if _, err := name.NewRegistry(opts.Registry, nopts...); err != nil || strings.ContainsAny(opts.Registry, "/@") {
			return nil, invalidf("invalid registry %q: want host:port", opts.Registry)
		}
		if host, rest, ok := strings.Cut(repo, "/"); ok && strings.Contains(host, ":") {
			// A registry host with a port cannot be spelled in a
			// repository path; a node registry serves any digest under
			// any name, though.
			if p.digest == "" {
				return nil, invalidf("a node registry cannot serve a name with a registry port by tag (a repository path cannot spell the port): pull it by digest")
			}
			repo = rest
		}
		repo = opts.Registry + "/" + repo
	}
	s := repo + ":" + strings.TrimPrefix(p.tag, p.name+":")
	if p.digest != "" {
		s = repo + "@" + p.digest
	}
	r, err := name.ParseReference(s, nopts...)
	if err != nil {
		return nil, invalidf("invalid reference %s: %v", s, err)
	}
	return r, nil
}

// pulled returns the image p names if the store has it already.
func (s *Store) pulled(p pullRef) *Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p.tag != "" {
		if id, ok := s.st.tags[p.tag]; ok {
			return s.st.image(s.st.images[id], s.st.tagsOf(id))
		}
		return nil
	}
	for id, rec := range s.st.images {
		if rec.manifest.Digest.String() == p.digest {
			return s.st.image(rec, s.st.tagsOf(id))
		}
	}
	return nil
}

// adopt returns the image with ID id, tagged tag (unless ""), if the store
// has it: the registry serves an image the store holds under another name
// or manifest. It returns nil, nil when the image must be downloaded.
func (s *Store) adopt(id, tag string) (*Image, error) {
	if tag == "" {
		img, err := s.Get(id)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return img, err
	}
	if err := s.Tag(id, tag); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	return s.Get(id)
}

// checkPulledManifest refuses what the store cannot hold before anything
// is downloaded. Foreign layers are refused rather than fetched from the
// URLs a manifest names: a registry must not send a node elsewhere.
func checkPulledManifest(m *v1.Manifest) error {
	if _, err := parseDigest(m.Config.Digest.String()); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for i, l := range m.Layers {
		if _, err := parseDigest(l.Digest.String()); err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		if l.Size < 0 {
			return invalidf("layer %d: size %d", i+1, l.Size)
		}
		if len(l.URLs) > 0 {
			return invalidf("layer %d (%s): foreign layers are not supported", i+1, l.MediaType)
		}
	}
	return nil
}

// writePulledLayout writes img as an OCI image-layout tar, its index.json
// naming tag (when not ""), downloading the blobs as it goes.
func writePulledLayout(w io.Writer, img v1.Image, m *v1.Manifest, tag string) error {
	mdata, err := img.RawManifest()
	if err != nil {
		return err
	}
	mdigest, err := img.Digest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	cdata, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(blobHeader(name, int64(len(data)))); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	done := map[v1.Hash]bool{m.Config.Digest: true}
	if err := put(blobName(m.Config.Digest), cdata); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if done[l.Digest] {
			continue
		}
		done[l.Digest] = true
		if err := copyLayer(tw, img, l); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	if err := put(blobName(mdigest), mdata); err != nil {
		return err
	}
	desc := v1.Descriptor{MediaType: mt, Size: int64(len(mdata)), Digest: mdigest}
	if tag != "" {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	}
	idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}})
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	if err := put(ocispec.ImageLayoutFile, layout); err != nil {
		return err
	}
	if err := put(ocispec.ImageIndexFile, idx); err != nil {
		return err
	}
	return tw.Close()
}

// copyLayer downloads layer l into the tar. go-containerregistry checks
// the blob's size and digest as it reads; Load checks them again.
func copyLayer(tw *tar.Writer, img v1.Image, l v1.Descriptor) error {
	layer, err := img.LayerByDigest(l.Digest)
	if err != nil {
		return err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := tw.WriteHeader(blobHeader(blobName(l.Digest), l.Size)); err != nil {
		return err
	}
	n, err := io.Copy(tw, rc)
	if err != nil {
		return err
	}
	if n != l.Size {
		return invalidf("the registry sent %d bytes, the manifest says %d", n, l.Size)
	}
	return nil
}

func blobHeader(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)}
}

// httpsOnly refuses plain-HTTP requests. go-containerregistry also tries
// http:// for loopback and private addresses, where whoever answers in
// clear text could otherwise serve a node its images.
type httpsOnly struct{ next http.RoundTripper }

func (t httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errPlainHTTP
	}
	return t.next.RoundTrip(req)
}

// pullError is a failed pull: a message for users that names the ref and
// the registry, with the cause and its class still reachable by errors.Is
// and errors.As.
type pullError struct {
	msg   string
	cause error
	class error // nil when unclassified
}

func (e *pullError) Error() string { return e.msg }

func (e *pullError) Unwrap() []error {
	if e.class == nil {
		return []error{e.cause}
	}
	return []error{e.cause, e.class}
}

// pullFailed explains an error of the registry client: what the registry
// answered rather than the request that got the answer, and a refused TLS
// handshake as such.
func pullFailed(ref, from string, err error) error {
	msg, class := describeRemote(err)
	return &pullError{msg: fmt.Sprintf("pull %s from %s: %s", ref, from, msg), cause: err, class: class}
}

func describeRemote(err error) (string, error) {
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) {
		return err.Error(), nil // ours, classified already
	}
	if terr, ok := errors.AsType[*transport.Error](err); ok {
		var class error
		if terr.StatusCode == http.StatusNotFound {
			class = ErrNotFound
		}
		var msgs []string
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
				class = ErrNotFound
			}
			msg := d.Message
			if msg == "" {
				msg = strings.ToLower(strings.ReplaceAll(string(d.Code), "_", " "))
			}
			msgs = append(msgs, msg)
		}
		if len(msgs) == 0 {
			msgs = append(msgs, fmt.Sprintf("the registry answered %d %s", terr.StatusCode, http.StatusText(terr.StatusCode)))
		}
		return strings.Join(msgs, "; "), class
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" {
		// The peer's TLS alert, as "remote error: tls: certificate
		// required", the text ca.Explain recognises.
		return "the registry refused the TLS connection: " + oe.Error(), nil
	}
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return "cannot verify the registry's certificate: " + cve.Err.Error(), nil
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		msg := ue.Err.Error()
		if errors.Is(err, errPlainHTTP) && strings.Contains(msg, "HTTP response to HTTPS client") {
			msg += " (plain HTTP is refused unless the pull is insecure)"
		}
		return msg, nil
	}
	return err.Error(), nil
}
