package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// requiresRoot skips a test that needs root (mknod, trusted xattrs,
// overlayfs). CI runs as root, so there the tests always run.
func requiresRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mknod, trusted.* xattrs and overlayfs mounts")
	}
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// ent is one tar entry of a test archive.
type ent struct {
	name         string
	typ          byte
	body         string
	link         string
	mode         int64
	uid, gid     int
	major, minor int64
	xattrs       map[string]string
	mtime        time.Time
}

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}

// whiteout deletes name of the layers below.
func whiteout(name string) ent {
	d, b := path.Split(name)
	return file(d+whiteoutPrefix+b, "")
}

// opaque hides what layers below have in dir.
func opaque(d string) ent { return file(path.Join(d, whiteoutOpaque), "") }

// mkTar builds an uncompressed tar of the entries, in order.
func mkTar(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := &tar.Header{
			Name:     e.name,
			Typeflag: e.typ,
			Linkname: e.link,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			Devmajor: e.major,
			Devminor: e.minor,
			ModTime:  e.mtime,
			Format:   tar.FormatPAX,
		}
		if hdr.ModTime.IsZero() {
			hdr.ModTime = testTime
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[paxXattrPrefix+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatalf("tar body %s: %v", e.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gunzipIfNeeded(t *testing.T, b []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(b, gzipMagic) {
		return b
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// testImage is an image to put in a test archive.
type testImage struct {
	tags    []string
	layers  [][]byte  // blobs as they go in the archive (plain or gzip)
	diffIDs []v1.Hash // nil: computed from the layers; set to lie
	config  v1.Config
	created time.Time
	ann     map[string]string // OCI index.json annotations
}

func (ti testImage) configJSON(t *testing.T) []byte {
	t.Helper()
	diffIDs := ti.diffIDs
	if diffIDs == nil {
		for _, l := range ti.layers {
			diffIDs = append(diffIDs, digestOf(gunzipIfNeeded(t, l)))
		}
	}
	created := ti.created
	if created.IsZero() {
		created = testTime
	}
	cf := v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: created},
		Config:       ti.config,
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	b, err := json.Marshal(cf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (ti testImage) manifestJSON(t *testing.T) []byte {
	t.Helper()
	cfg := ti.configJSON(t)
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: digestOf(cfg)},
	}
	for _, l := range ti.layers {
		mt := types.OCIUncompressedLayer
		if bytes.HasPrefix(l, gzipMagic) {
			mt = types.OCILayer
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Size: int64(len(l)), Digest: digestOf(l)})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// archiveFile is one file of an outer (docker save / OCI) archive.
type archiveFile struct {
	name string
	body []byte
	link string // symlink target when set
}

func mkArchive(t *testing.T, files []archiveFile) []byte {
	t.Helper()
	var ents []ent
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	slices.Sort(sorted)
	for _, d := range sorted {
		ents = append(ents, dir(d+"/"))
	}
	for _, f := range files {
		if f.link != "" {
			ents = append(ents, symlink(f.name, f.link))
			continue
		}
		ents = append(ents, file(f.name, string(f.body)))
	}
	return mkTar(t, ents...)
}

type saveStyle int

const (
	legacySave saveStyle = iota // <id>/layer.tar, <id>.json (Docker < 25)
	blobsSave                   // blobs/sha256/..., plus an OCI index (Docker >= 25)
)

// dockerSave builds a `docker save` archive of the images.
func dockerSave(t *testing.T, style saveStyle, imgs ...testImage) []byte {
	t.Helper()
	type mfEntry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var files []archiveFile
	var mf []mfEntry
	seen := map[string]string{} // layer digest → first path
	var index v1.IndexManifest
	index.SchemaVersion = 2
	for _, ti := range imgs {
		cfg := ti.configJSON(t)
		e := mfEntry{RepoTags: ti.tags}
		if style == legacySave {
			e.Config = digestOf(cfg).Hex + ".json"
		} else {
			e.Config = "blobs/sha256/" + digestOf(cfg).Hex
		}
		files = append(files, archiveFile{name: e.Config, body: cfg})
		parent := ""
		for _, l := range ti.layers {
			d := digestOf(l).Hex
			var p string
			if style == legacySave {
				// v1 layer IDs differ per position in the stack; a layer
				// seen before is a symlink to its first copy, as docker
				// save writes it.
				v1id := digestOf([]byte(parent + d)).Hex
				parent = v1id
				p = v1id + "/layer.tar"
				if first, ok := seen[d]; ok {
					if first != p {
						files = append(files, archiveFile{name: p, link: "../" + first})
					}
				} else {
					seen[d] = p
					files = append(files, archiveFile{name: p, body: l})
					files = append(files, archiveFile{name: v1id + "/VERSION", body: []byte("1.0")})
				}
			} else {
				p = "blobs/sha256/" + d
				if _, ok := seen[d]; !ok {
					seen[d] = p
					files = append(files, archiveFile{name: p, body: l})
				}
			}
			e.Layers = append(e.Layers, p)
		}
		if style == blobsSave {
			m := ti.manifestJSON(t)
			files = append(files, archiveFile{name: "blobs/sha256/" + digestOf(m).Hex, body: m})
			index.Manifests = append(index.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(m)), Digest: digestOf(m)})
		}
		mf = append(mf, e)
	}
	mfData, err := json.Marshal(mf)
	if err != nil {
		t.Fatal(err)
	}
	if style == blobsSave {
		idx, _ := json.Marshal(index)
		files = append(files,
			archiveFile{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
			archiveFile{name: "index.json", body: idx})
	}
	// docker save writes manifest.json last; Load must not depend on order.
	files = append(files, archiveFile{name: "manifest.json", body: mfData})
	return mkArchive(t, files)
}

// ociLayout builds an OCI image-layout archive of the images, each named
// in index.json by its annotations.
func ociLayout(t *testing.T, imgs ...testImage) []byte {
	t.Helper()
	var files []archiveFile
	have := map[string]bool{}
	add := func(b []byte) v1.Hash {
		d := digestOf(b)
		if !have[d.Hex] {
			have[d.Hex] = true
			files = append(files, archiveFile{name: "blobs/sha256/" + d.Hex, body: b})
		}
		return d
	}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, ti := range imgs {
		add(ti.configJSON(t))
		for _, l := range ti.layers {
			add(l)
		}
		m := ti.manifestJSON(t)
		index.Manifests = append(index.Manifests, v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Size: int64(len(m)), Digest: add(m), Annotations: ti.ann,
		})
	}
	idx, err := json.Marshal(index)
	if err != nil {
		t.Fatal(err)
	}
	files = append(files,
		archiveFile{name: ocispec.ImageLayoutFile, body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		archiveFile{name: ocispec.ImageIndexFile, body: idx})
	return mkArchive(t, files)
}

// mountOverlay mounts a read-only overlay of the layer dirs (lowest first)
// and unmounts it when the test ends, also on failure.
func mountOverlay(t *testing.T, lowest []string) string {
	t.Helper()
	mnt := t.TempDir()
	top := slices.Clone(lowest)
	slices.Reverse(top)
	opts := "lowerdir=" + strings.Join(top, ":")
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// newStore opens a store in a fresh temp dir with a clock that advances a
// second per call, so images have distinct, ordered Created times.
func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	clock := testTime
	s.now = func() time.Time {
		clock = clock.Add(time.Second)
		return clock
	}
	return s
}

// snapshot is what a failed operation must not change.
type snapshot struct {
	index  string
	blobs  []string
	layers []string
	tmp    []string
}

func takeSnapshot(t *testing.T, s *Store) snapshot {
	t.Helper()
	idx, err := os.ReadFile(filepath.Join(s.root, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{
		index:  string(idx),
		blobs:  dirNames(t, s.blobDir()),
		layers: dirNames(t, s.layerDir()),
		tmp:    dirNames(t, s.tmpDir()),
	}
}

func dirNames(t *testing.T, d string) []string {
	t.Helper()
	entries, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func mustLoad(t *testing.T, s *Store, archive []byte) []*Image {
	t.Helper()
	imgs, err := s.Load(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return imgs
}

func mustImport(t *testing.T, s *Store, rootfs []byte, ref string, cfg *Config) *Image {
	t.Helper()
	img, err := s.Import(bytes.NewReader(rootfs), ref, cfg)
	if err != nil {
		t.Fatalf("Import %q: %v", ref, err)
	}
	return img
}

func mustLayerDirs(t *testing.T, s *Store, img *Image) []string {
	t.Helper()
	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatalf("LayerDirs(%s): %v", img.ID, err)
	}
	return dirs
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func assertMissing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: want it gone, Lstat says %v", p, err)
	}
}
