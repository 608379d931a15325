package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Read access to the store's content by digest, for the node registry that
// serves it to other nodes. Only what index.json references is reachable:
// a blob a Load is still putting in place, or one a crash left behind, is
// not content of the store yet.

// digestRe is the only digest form the store reads by: the store keeps
// sha256 blobs named by their lower-case hex, and nothing else may reach a
// path.
var digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// parseDigest validates a "sha256:<64 hex>" digest.
func parseDigest(digest string) (v1.Hash, error) {
	if !digestRe.MatchString(digest) {
		return v1.Hash{}, invalidf("invalid digest %q: want sha256:<64 lower-case hex digits>", digest)
	}
	return v1.NewHash(digest)
}

// Manifest returns the manifest of the image tagged ref ("name[:tag]" in
// any spelling Get accepts for a tag), as stored: its descriptor (media
// type, size, digest) and the bytes the digest names. Unlike Get, ref is
// never read as an image ID: a registry client names tags, and a name made
// of hex digits must not reach some other image by ID prefix.
func (s *Store) Manifest(ref string) (v1.Descriptor, []byte, error) {
	full, err := parseRef(ref)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.st.tags[full]
	if !ok {
		return v1.Descriptor{}, nil, notFoundf("no such image: %s", full)
	}
	return s.readManifest(s.st.images[id])
}

// ManifestByDigest returns the manifest whose digest is digest
// ("sha256:<hex>"), provided it is the manifest of an image in the store;
// a config or layer blob with that digest is not a manifest and is not
// found. digest is a manifest digest, not an image ID.
func (s *Store) ManifestByDigest(digest string) (v1.Descriptor, []byte, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return v1.Descriptor{}, nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, rec := range s.st.images {
		if rec.manifest.Digest == h {
			return s.readManifest(rec)
		}
	}
	return v1.Descriptor{}, nil, notFoundf("no such manifest: %s", digest)
}

// readManifest reads rec's manifest blob and checks it against its digest,
// so that a damaged file is reported here rather than served under a
// digest it no longer has. The caller holds the lock.
func (s *Store) readManifest(rec *record) (v1.Descriptor, []byte, error) {
	desc := rec.manifest
	data, err := s.readBlob(desc.Digest)
	if err != nil {
		return v1.Descriptor{}, nil, fmt.Errorf("manifest of image %s: %w", rec.id, err)
	}
	if got := sha256Hash(data); got != desc.Digest {
		return v1.Descriptor{}, nil, fmt.Errorf("manifest of image %s: blob %s is damaged: content is %s", rec.id, desc.Digest, got)
	}
	desc.Size = int64(len(data))
	if desc.MediaType == "" {
		desc.MediaType = manifestMediaType(data)
	}
	return desc, data, nil
}

// manifestMediaType reads the media type a manifest declares, for
// descriptors stored without one; an image manifest that declares none is
// OCI (Docker's always declare theirs).
func manifestMediaType(data []byte) types.MediaType {
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if json.Unmarshal(data, &probe) == nil && probe.MediaType != "" {
		return probe.MediaType
	}
	return types.OCIManifestSchema1
}

// OpenBlob opens a blob of an image in the store (a manifest, a config or
// a layer) by its digest, "sha256:<64 lower-case hex>", and returns it with
// its size. Any other digest form is refused with ErrInvalid before it can
// reach a path, and a digest no image references is ErrNotFound. The blob
// stays readable until closed, even if its image is removed meanwhile.
func (s *Store) OpenBlob(digest string) (io.ReadSeekCloser, int64, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return nil, 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.st.hasBlob(h) {
		return nil, 0, notFoundf("no such blob: %s", digest)
	}
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s: %w", digest, err)
	}
	return f, st.Size(), nil
}

// hasBlob reports whether an image in st references blob h.
func (st *state) hasBlob(h v1.Hash) bool {
	for _, rec := range st.images {
		for _, b := range rec.blobs {
			if b == h {
				return true
			}
		}
	}
	return false
}
