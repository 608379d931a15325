package image

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Import makes a one-layer image from a rootfs tarball (plain, gzip or
// zstd), like `docker import`. ref may be "" for an untagged image or
// "name[:tag]" (the tag defaults to latest); a tag already on another image
// moves to the new one. cfg gives the image config (nil means empty). The
// layer is stored uncompressed, so its blob digest is its diff ID.
func (s *Store) Import(r io.Reader, ref string, cfg *Config) (*Image, error) {
	tag := ""
	if ref != "" {
		var err error
		if tag, err = parseRef(ref); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	t, err := s.begin("import")
	if err != nil {
		return nil, err
	}
	defer t.cleanup()

	// Read, hash and unpack without the lock: this is the slow part and it
	// touches only the txn's own temp dir.
	dir := filepath.Join(t.dir, "layer")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	blobPath := filepath.Join(t.dir, "layer.tar")
	f, err := os.Create(blobPath)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	info, err := scanLayer(r, dir, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}

	created := v1.Time{Time: s.now().UTC()}
	cf := v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      created,
		Config:       cfg.toV1(),
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{info.diffID}},
		History:      []v1.History{{Created: created, Comment: "Imported from tarball"}},
	}
	cdata, err := json.Marshal(cf)
	if err != nil {
		return nil, fmt.Errorf("import: encode config: %w", err)
	}
	layer := v1.Descriptor{MediaType: types.OCIUncompressedLayer, Size: info.usize, Digest: info.diffID}

	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.commitImport(t, dir, blobPath, layer, cdata, info.usize, tag)
	if err != nil {
		t.abort()
		return nil, fmt.Errorf("import: %w", err)
	}
	return img, nil
}

func (s *Store) commitImport(t *txn, dir, blobPath string, layer v1.Descriptor, cdata []byte, usize int64, tag string) (*Image, error) {
	if err := t.putLayer(dir, layer.Digest); err != nil {
		return nil, err
	}
	if err := t.putBlobFile(blobPath, layer.Digest); err != nil {
		return nil, err
	}
	rec, err := t.putImage(cdata, []v1.Descriptor{layer}, []int64{usize})
	if err != nil {
		return nil, err
	}
	next := s.st.clone()
	if _, ok := next.images[rec.id]; !ok {
		next.images[rec.id] = rec
	}
	if tag != "" {
		next.tags[tag] = rec.id
	}
	if err := s.persist(next); err != nil {
		return nil, err
	}
	s.st = next
	return next.image(next.images[rec.id], next.tagsOf(rec.id)), nil
}

// putImage writes an OCI manifest for a config blob and its (already
// stored) layers, stores both, and returns the image record.
func (t *txn) putImage(cdata []byte, layers []v1.Descriptor, sizes []int64) (*record, error) {
	ch, err := t.putBlob(cdata)
	if err != nil {
		return nil, err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cdata)), Digest: ch},
		Layers:        layers,
	}
	mdata, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	mh, err := t.putBlob(mdata)
	if err != nil {
		return nil, err
	}
	mdesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(mdata)), Digest: mh}
	return newRecord(mdesc, &m, cdata, sizes)
}
