package image

import (
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// txn gathers what one Import or Load adds, so that a failure can take it
// all back: until index.json names them, new blobs and layers are garbage,
// and abort removes them at once rather than waiting for the next Open.
type txn struct {
	s      *Store
	dir    string // private temp dir under root/tmp
	blobs  []v1.Hash
	layers []v1.Hash
	known  map[v1.Hash]layerInfo // layer blobs already verified, by digest
}

func (s *Store) begin(kind string) (*txn, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), kind+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return &txn{s: s, dir: dir, known: map[v1.Hash]layerInfo{}}, nil
}

// cleanup removes the txn's temp dir. It needs no lock: nobody else uses
// the dir.
func (t *txn) cleanup() { os.RemoveAll(t.dir) }

// abort removes the blobs and layers this txn put in place. The caller
// holds the store lock, so no other operation can have started to rely on
// them.
func (t *txn) abort() {
	for _, h := range t.blobs {
		os.Remove(t.s.blobPath(h))
	}
	for _, h := range t.layers {
		t.s.removeLayer(h.Hex)
	}
	t.blobs, t.layers = nil, nil
}

// putBlob stores data as a blob, unless the store has it already.
func (t *txn) putBlob(data []byte) (v1.Hash, error) {
	h := sha256Hash(data)
	if t.hasBlob(h) {
		return h, nil
	}
	f, err := os.CreateTemp(t.dir, "blob-")
	if err != nil {
		return h, err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return h, fmt.Errorf("write blob %s: %w", h, err)
	}
	return h, t.putBlobFile(f.Name(), h)
}

// putBlobFile moves a complete, synced, verified file into the blob store
// as blob h, unless the store has it already.
func (t *txn) putBlobFile(path string, h v1.Hash) error {
	if t.hasBlob(h) {
		return os.Remove(path)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return err
	}
	if err := os.Rename(path, t.s.blobPath(h)); err != nil {
		return fmt.Errorf("store blob %s: %w", h, err)
	}
	t.blobs = append(t.blobs, h)
	return syncDir(t.s.blobDir())
}

func (t *txn) hasBlob(h v1.Hash) bool {
	_, err := os.Lstat(t.s.blobPath(h))
	return err == nil
}

func (t *txn) hasLayer(chain v1.Hash) bool {
	_, err := os.Lstat(t.s.layerPath(chain))
	return err == nil
}

// putLayer renames a completely unpacked dir to layers/<chain>, unless that
// layer exists already, in which case the copy is dropped: each chain is
// unpacked once and shared.
func (t *txn) putLayer(dir string, chain v1.Hash) error {
	if t.hasLayer(chain) {
		return os.RemoveAll(dir)
	}
	if err := os.Rename(dir, t.s.layerPath(chain)); err != nil {
		return fmt.Errorf("store layer %s: %w", chain, err)
	}
	t.layers = append(t.layers, chain)
	return syncDir(t.s.layerDir())
}

// layerSource is a layer blob found in an archive.
type layerSource struct {
	open   func() (io.ReadCloser, error)
	digest *v1.Hash // the blob digest the archive claims, if it names one
	diffID v1.Hash  // from the image config
	chain  v1.Hash
}

// addLayer verifies a layer blob against the digests the archive and the
// image config claim, stores it, and unpacks it unless its chain is
// unpacked already. It returns the blob's descriptor and uncompressed size.
// The caller holds the store lock.
func (t *txn) addLayer(src layerSource) (v1.Descriptor, int64, error) {
	haveLayer := t.hasLayer(src.chain)
	if src.digest != nil && haveLayer && t.hasBlob(*src.digest) {
		if info, ok := t.knownLayer(*src.digest); ok && info.diffID == src.diffID {
			return info.descriptor(), info.usize, nil
		}
	}

	rc, err := src.open()
	if err != nil {
		return v1.Descriptor{}, 0, err
	}
	defer rc.Close()
	// Keep a copy of the blob while reading it, unless the store has it.
	var blob *os.File
	var copyTo io.Writer = io.Discard
	if src.digest == nil || !t.hasBlob(*src.digest) {
		if blob, err = os.CreateTemp(t.dir, "blob-"); err != nil {
			return v1.Descriptor{}, 0, err
		}
		defer os.Remove(blob.Name())
		defer blob.Close()
		copyTo = blob
	}
	dir := ""
	if !haveLayer {
		if dir, err = os.MkdirTemp(t.dir, "layer-"); err != nil {
			return v1.Descriptor{}, 0, err
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			return v1.Descriptor{}, 0, err
		}
	}
	info, err := scanLayer(io.TeeReader(rc, copyTo), dir, nil)
	if err != nil {
		if src.digest != nil {
			// A blob that does not match its digest is corrupt or
			// swapped; say that rather than what its bytes broke.
			if got, herr := hashSource(src); herr == nil && got != *src.digest {
				return v1.Descriptor{}, 0, invalidf("blob digest mismatch: archive says %s, content is %s", src.digest, got)
			}
		}
		return v1.Descriptor{}, 0, err
	}
	if src.digest != nil && info.digest != *src.digest {
		return v1.Descriptor{}, 0, invalidf("blob digest mismatch: archive says %s, content is %s", src.digest, info.digest)
	}
	if info.diffID != src.diffID {
		return v1.Descriptor{}, 0, invalidf("diff ID mismatch: config says %s, content is %s", src.diffID, info.diffID)
	}
	if blob != nil {
		if err := blob.Sync(); err != nil {
			return v1.Descriptor{}, 0, err
		}
		if err := t.putBlobFile(blob.Name(), info.digest); err != nil {
			return v1.Descriptor{}, 0, err
		}
	}
	if dir != "" {
		if err := t.putLayer(dir, src.chain); err != nil {
			return v1.Descriptor{}, 0, err
		}
	}
	t.known[info.digest] = info
	return info.descriptor(), info.usize, nil
}

// knownLayer finds what is known of a stored layer blob, from this txn or
// from an image in the store.
func (t *txn) knownLayer(h v1.Hash) (layerInfo, bool) {
	if info, ok := t.known[h]; ok {
		return info, true
	}
	for _, rec := range t.s.st.images {
		for i, l := range rec.layers {
			if l.Digest == h {
				return layerInfo{digest: h, size: l.Size, mediaType: l.MediaType, diffID: rec.diffIDs[i], usize: rec.layerSizes[i]}, true
			}
		}
	}
	return layerInfo{}, false
}

func (info layerInfo) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: info.mediaType, Size: info.size, Digest: info.digest}
}

func hashSource(src layerSource) (v1.Hash, error) {
	rc, err := src.open()
	if err != nil {
		return v1.Hash{}, err
	}
	defer rc.Close()
	h, _, err := v1.SHA256(rc)
	return h, err
}
