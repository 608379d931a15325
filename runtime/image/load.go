package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annotationContainerdName is where containerd and Docker (since 25) put the
// full image name when ref.name holds only a tag.
const annotationContainerdName = "io.containerd.image.name"

// candidate is one image found in an archive.
type candidate struct {
	rec  *record
	tags []string
}

// Load reads a `docker save` archive (manifest.json, with layers as
// <id>/layer.tar or blobs/sha256/<hex>) or an OCI image-layout archive
// (oci-layout and index.json), as a tar, optionally gzip- or
// zstd-compressed, possibly holding several images. It returns the images
// loaded, with their tags. An image already in the store only gets the
// archive's tags; a tag that moves leaves its old image dangling, as in
// Docker. Load is all-or-nothing: on error the store is as it was.
func (s *Store) Load(r io.Reader) ([]*Image, error) {
	t, err := s.begin("load")
	if err != nil {
		return nil, err
	}
	defer t.cleanup()

	// Spool without the lock: the archive arrives at the client's pace.
	spool := filepath.Join(t.dir, "archive")
	if err := os.Mkdir(spool, 0o700); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := spoolArchive(r, spool); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	ar, err := os.OpenRoot(spool)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	defer ar.Close()

	s.mu.Lock()
	defer s.mu.Unlock()
	imgs, err := s.loadLocked(t, ar)
	if err != nil {
		t.abort()
		return nil, fmt.Errorf("load: %w", err)
	}
	return imgs, nil
}

func (s *Store) loadLocked(t *txn, ar *os.Root) ([]*Image, error) {
	var cands []*candidate
	var err error
	switch {
	case exists(ar, "manifest.json"):
		// Docker since 25 writes an OCI layout and manifest.json side by
		// side; manifest.json is what Docker itself reads back.
		cands, err = t.loadDocker(ar)
	case exists(ar, ocispec.ImageIndexFile):
		cands, err = t.loadOCI(ar)
	default:
		return nil, invalidf("unknown archive format: no manifest.json or index.json")
	}
	if err != nil {
		return nil, err
	}

	next := s.st.clone()
	var order []string
	for _, c := range cands {
		if _, ok := next.images[c.rec.id]; !ok {
			next.images[c.rec.id] = c.rec
		}
		for _, tag := range c.tags {
			next.tags[tag] = c.rec.id
		}
		if !slices.Contains(order, c.rec.id) {
			order = append(order, c.rec.id)
		}
	}
	if err := s.persist(next); err != nil {
		return nil, err
	}
	s.st = next
	byID := next.tagsByID()
	imgs := make([]*Image, 0, len(order))
	for _, id := range order {
		imgs = append(imgs, next.image(next.images[id], byID[id]))
	}
	return imgs, nil
}

// loadDocker reads a `docker save` archive.
func (t *txn) loadDocker(ar *os.Root) ([]*candidate, error) {
	data, err := readArchiveFile(ar, "manifest.json")
	if err != nil {
		return nil, err
	}
	var mf tarball.Manifest
	if err := json.Unmarshal(data, &mf); err != nil {
		return nil, invalidf("manifest.json: unknown format: %v", err)
	}
	if len(mf) == 0 {
		return nil, invalidf("manifest.json: no images")
	}
	var cands []*candidate
	for i, d := range mf {
		what := fmt.Sprintf("image %d in manifest.json", i+1)
		var tags []string
		for _, rt := range d.RepoTags {
			tag, err := parseRef(rt)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			tags = append(tags, tag)
		}
		if len(tags) > 0 {
			what = tags[0]
		}
		cpath, err := cleanPath(d.Config)
		if err != nil || cpath == "" {
			return nil, invalidf("%s: bad config path %q", what, d.Config)
		}
		cdata, err := readArchiveFile(ar, cpath)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		id := sha256Hash(cdata)
		if want, ok := blobPathDigest(cpath); ok && want != id {
			return nil, invalidf("%s: config %s: digest mismatch: content is %s", what, cpath, id)
		}
		if rec := t.imageByID(id.String(), cands); rec != nil {
			cands = append(cands, &candidate{rec: rec, tags: tags})
			continue
		}
		cf, err := v1.ParseConfigFile(bytes.NewReader(cdata))
		if err != nil {
			return nil, invalidf("%s: config %s: %v", what, cpath, err)
		}
		if n, l := len(cf.RootFS.DiffIDs), len(d.Layers); n != l {
			return nil, invalidf("%s: config lists %d layers, manifest.json %d", what, n, l)
		}
		if err := checkDiffIDs(cf.RootFS.DiffIDs); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		chains := chainIDs(cf.RootFS.DiffIDs)
		var layers []v1.Descriptor
		var sizes []int64
		for j, lp := range d.Layers {
			p, err := cleanPath(lp)
			if err != nil || p == "" {
				return nil, invalidf("layer %d of %s: bad path %q", j+1, what, lp)
			}
			src := layerSource{
				open:   func() (io.ReadCloser, error) { return openArchiveFile(ar, p) },
				diffID: cf.RootFS.DiffIDs[j],
				chain:  chains[j],
			}
			if h, ok := blobPathDigest(p); ok {
				src.digest = &h
			}
			desc, usize, err := t.addLayer(src)
			if err != nil {
				return nil, fmt.Errorf("layer %d of %s: %w", j+1, what, err)
			}
			layers = append(layers, desc)
			sizes = append(sizes, usize)
		}
		rec, err := t.putImage(cdata, layers, sizes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		cands = append(cands, &candidate{rec: rec, tags: tags})
	}
	return cands, nil
}

// loadOCI reads an OCI image-layout archive. Manifests and layers are kept
// as they are, so the images keep their manifest digests.
func (t *txn) loadOCI(ar *os.Root) ([]*candidate, error) {
	if data, err := readArchiveFile(ar, ocispec.ImageLayoutFile); err == nil {
		var l ocispec.ImageLayout
		if err := json.Unmarshal(data, &l); err != nil || l.Version == "" {
			return nil, invalidf("%s: unknown format", ocispec.ImageLayoutFile)
		}
	}
	data, err := readArchiveFile(ar, ocispec.ImageIndexFile)
	if err != nil {
		return nil, err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, invalidf("index.json: unknown format: %v", err)
	}
	var cands []*candidate
	for i, d := range idx.Manifests {
		tags, err := ociTags(d.Annotations)
		if err != nil {
			return nil, fmt.Errorf("index.json: manifest %d: %w", i+1, err)
		}
		what := fmt.Sprintf("image %s", d.Digest)
		if len(tags) > 0 {
			what = tags[0]
		}
		mdesc, m, mdata, err := resolveManifest(ar, d, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if m == nil {
			continue // not an image (an attestation, a signature, ...)
		}
		cdata, err := readArchiveBlob(ar, m.Config.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: config: %w", what, err)
		}
		if rec := t.imageByID(m.Config.Digest.String(), cands); rec != nil {
			cands = append(cands, &candidate{rec: rec, tags: tags})
			continue
		}
		cf, err := v1.ParseConfigFile(bytes.NewReader(cdata))
		if err != nil {
			return nil, invalidf("%s: config: %v", what, err)
		}
		if n, l := len(cf.RootFS.DiffIDs), len(m.Layers); n != l {
			return nil, invalidf("%s: config lists %d layers, manifest %d", what, n, l)
		}
		if err := checkDiffIDs(cf.RootFS.DiffIDs); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		chains := chainIDs(cf.RootFS.DiffIDs)
		sizes := make([]int64, len(m.Layers))
		for j, l := range m.Layers {
			digest := l.Digest
			src := layerSource{
				open:   func() (io.ReadCloser, error) { return openArchiveBlob(ar, digest) },
				digest: &digest,
				diffID: cf.RootFS.DiffIDs[j],
				chain:  chains[j],
			}
			_, usize, err := t.addLayer(src)
			if err != nil {
				return nil, fmt.Errorf("layer %d of %s: %w", j+1, what, err)
			}
			sizes[j] = usize
		}
		if _, err := t.putBlob(cdata); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if _, err := t.putBlob(mdata); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		rec, err := newRecord(mdesc, m, cdata, sizes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		cands = append(cands, &candidate{rec: rec, tags: tags})
	}
	if len(cands) == 0 {
		return nil, invalidf("index.json: no image for linux/%s", runtime.GOARCH)
	}
	return cands, nil
}

// resolveManifest follows d down to an image manifest, picking this
// platform's entry from image indexes. It returns a nil manifest when d is
// not an image at all.
func resolveManifest(ar *os.Root, d v1.Descriptor, depth int) (v1.Descriptor, *v1.Manifest, []byte, error) {
	if depth > 4 {
		return d, nil, nil, invalidf("image indexes nested too deep")
	}
	data, err := readArchiveBlob(ar, d.Digest)
	if err != nil {
		return d, nil, nil, err
	}
	mt := d.MediaType
	if mt == "" {
		// Some tools leave the media type out of the descriptor; the
		// document itself tells what it is.
		var probe struct {
			MediaType types.MediaType `json:"mediaType"`
			Manifests json.RawMessage `json:"manifests"`
			Config    json.RawMessage `json:"config"`
		}
		_ = json.Unmarshal(data, &probe)
		switch {
		case probe.MediaType != "":
			mt = probe.MediaType
		case probe.Manifests != nil:
			mt = types.OCIImageIndex
		case probe.Config != nil:
			mt = types.OCIManifestSchema1
		}
	}
	switch mt {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		m, err := v1.ParseManifest(bytes.NewReader(data))
		if err != nil {
			return d, nil, nil, invalidf("manifest %s: %v", d.Digest, err)
		}
		if m.Config.MediaType != "" && m.Config.MediaType != types.OCIConfigJSON && m.Config.MediaType != types.DockerConfigJSON {
			return d, nil, nil, nil // an artifact, not a container image
		}
		return v1.Descriptor{MediaType: mt, Size: int64(len(data)), Digest: d.Digest}, m, data, nil
	case types.OCIImageIndex, types.DockerManifestList:
		idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
		if err != nil {
			return d, nil, nil, invalidf("index %s: %v", d.Digest, err)
		}
		for _, c := range idx.Manifests {
			if c.Platform != nil && (c.Platform.OS != "linux" || c.Platform.Architecture != runtime.GOARCH) {
				continue
			}
			if !exists(ar, blobName(c.Digest)) {
				continue // exports may hold only some platforms
			}
			md, m, mdata, err := resolveManifest(ar, c, depth+1)
			if err != nil || m != nil {
				return md, m, mdata, err
			}
		}
		return d, nil, nil, invalidf("index %s: no image for linux/%s in the archive", d.Digest, runtime.GOARCH)
	}
	return d, nil, nil, nil
}

// ociTags reads an index.json descriptor's name. ref.name may be a full
// reference or, as Docker and containerd write it, only a tag, with the name
// in io.containerd.image.name; a bare tag without a name leaves the image
// untagged.
func ociTags(ann map[string]string) ([]string, error) {
	raw := ann[ocispec.AnnotationRefName]
	if raw == "" || isTagOnly(raw) {
		raw = ann[annotationContainerdName]
	}
	if raw == "" {
		return nil, nil
	}
	tag, err := parseRef(raw)
	if err != nil {
		return nil, err
	}
	return []string{tag}, nil
}

// imageByID finds an image already in the store or earlier in the archive.
func (t *txn) imageByID(id string, cands []*candidate) *record {
	if rec, ok := t.s.st.images[id]; ok {
		return rec
	}
	for _, c := range cands {
		if c.rec.id == id {
			return c.rec
		}
	}
	return nil
}

func checkDiffIDs(ids []v1.Hash) error {
	for _, d := range ids {
		if d.Algorithm != "sha256" {
			return invalidf("diff ID %s: only sha256 is supported", d)
		}
	}
	return nil
}

// blobPathDigest reads the digest out of a "blobs/sha256/<hex>" path.
func blobPathDigest(p string) (v1.Hash, bool) {
	dir, file := path.Split(p)
	if dir != "blobs/sha256/" {
		return v1.Hash{}, false
	}
	h, err := v1.NewHash("sha256:" + file)
	return h, err == nil
}

func blobName(h v1.Hash) string { return path.Join(ocispec.ImageBlobsDir, h.Algorithm, h.Hex) }

func readArchiveBlob(ar *os.Root, h v1.Hash) ([]byte, error) {
	if h.Algorithm != "sha256" {
		return nil, invalidf("blob %s: only sha256 is supported", h)
	}
	data, err := readArchiveFile(ar, blobName(h))
	if err != nil {
		return nil, err
	}
	if got := sha256Hash(data); got != h {
		return nil, invalidf("blob %s: digest mismatch: content is %s", h, got)
	}
	return data, nil
}

func openArchiveBlob(ar *os.Root, h v1.Hash) (io.ReadCloser, error) {
	if h.Algorithm != "sha256" {
		return nil, invalidf("blob %s: only sha256 is supported", h)
	}
	return openArchiveFile(ar, blobName(h))
}

func openArchiveFile(ar *os.Root, name string) (io.ReadCloser, error) {
	f, err := ar.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, invalidf("%s: missing from the archive", name)
		}
		return nil, invalidf("%s: %w", name, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, invalidf("%s: not a regular file", name)
	}
	return f, nil
}

func readArchiveFile(ar *os.Root, name string) ([]byte, error) {
	f, err := openArchiveFile(ar, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAllLimited(f, name)
}

func exists(ar *os.Root, name string) bool {
	_, err := ar.Stat(name)
	return err == nil
}

// spoolArchive unpacks the outer archive into dir so that its files can be
// read in any order (docker save writes manifest.json last). Through
// os.Root, symlinks (docker save links shared layer.tar files) resolve only
// inside dir.
func spoolArchive(r io.Reader, dir string) error {
	br := bufio.NewReaderSize(r, 1<<16)
	var src io.Reader = br
	if magic, _ := br.Peek(len(zstdMagic)); bytes.HasPrefix(magic, gzipMagic) || bytes.HasPrefix(magic, zstdMagic) {
		rc, err := decompress(br)
		if err != nil {
			return invalidf("decompress archive: %w", err)
		}
		defer rc.Close()
		src = rc
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	cr := &countingReader{r: src}
	tr := tar.NewReader(cr)
	for first := true; ; first = false {
		hdr, err := tr.Next()
		if err == io.EOF {
			if first && cr.n < 512 {
				return invalidf("not a tar archive")
			}
			return nil
		}
		if err != nil {
			if first {
				return invalidf("not a tar archive: %v", err)
			}
			return invalidf("read archive: %w", err)
		}
		name, err := cleanPath(hdr.Name)
		if err != nil {
			return invalidf("archive entry %q escapes the archive root", hdr.Name)
		}
		if name == "" {
			continue
		}
		if err := spoolEntry(root, tr, hdr, name); err != nil {
			return spoolError(name, err)
		}
	}
}

func spoolEntry(root *os.Root, tr *tar.Reader, hdr *tar.Header, name string) error {
	if hdr.Typeflag == tar.TypeDir {
		return root.MkdirAll(name, 0o700)
	}
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		src := &errReader{r: tr}
		_, err = io.Copy(f, src)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if src.err != nil {
			return invalidf("read archive: %w", src.err)
		}
		return err
	case tar.TypeSymlink:
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return root.Symlink(hdr.Linkname, name)
	case tar.TypeLink:
		target, err := cleanPath(hdr.Linkname)
		if err != nil || target == "" {
			return invalidf("hardlink target %q escapes the archive root", hdr.Linkname)
		}
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return root.Link(target, name)
	}
	return nil // other entry types carry nothing an archive reader needs
}

// spoolError classifies a failure to write an archive entry: running out of
// disk is ours to report as is; anything else (an entry that would escape
// through a symlink, a path clash) is the archive's fault.
func spoolError(name string, err error) error {
	for _, e := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS} {
		if errors.Is(err, e) {
			return fmt.Errorf("archive entry %s: %w", name, err)
		}
	}
	if errors.Is(err, ErrInvalid) {
		return fmt.Errorf("archive entry %s: %w", name, err)
	}
	return invalidf("archive entry %s: %w", name, err)
}
