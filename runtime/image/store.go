// Package image is shoal's content-addressed image store, the counterpart
// of Docker's for `docker import` and `docker load`.
//
// On disk the store is an OCI image layout (oci-layout, index.json with one
// descriptor per tag or per untagged image, blobs/sha256/...) plus every
// layer unpacked once under layers/<chain ID hex>/, in overlayfs form, ready
// to be a lower dir. index.json is the commit point: blobs and layers are
// put in place first, then index.json is replaced atomically, so a crash
// leaves at worst unreferenced files, which the next Open removes.
package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// annotationLayerSizes keeps, on each index.json descriptor, the
// uncompressed size of every layer, so that Size survives a restart without
// re-reading compressed blobs.
const annotationLayerSizes = "dev.shoal.image.layer-sizes"

// maxJSON bounds the manifests, configs and indexes read into memory.
const maxJSON = 32 << 20

// Image is an image in the store, as the runtime and the CLI see it.
type Image struct {
	ID       string   // "sha256:<hex>" digest of the image config blob
	RepoTags []string // "name:tag", sorted
	Created  time.Time
	Size     int64 // sum of the uncompressed layer tar sizes
	Config   Config
	DiffIDs  []string // "sha256:..." per layer, lowest first
}

// Config is the part of an image's config that runs a container.
type Config struct {
	Env          []string
	Entrypoint   []string
	Cmd          []string
	WorkingDir   string
	User         string
	ExposedPorts []string // "80/tcp", sorted
	StopSignal   string
	Labels       map[string]string
}

// Store is an image store rooted at a directory (<data-dir>/images). It is
// safe for concurrent use by the goroutines of one process; two Stores must
// not share a root, because Open cleans up what it does not know.
type Store struct {
	// InUse, when set, reports whether a container uses the image ID, and
	// which. Set it before the Store is shared; it is called with the
	// Store's lock held, so it must not call back into the Store.
	InUse func(imageID string) (containerID string, used bool)

	root string
	now  func() time.Time // time is an input, so tests can order images

	mu sync.RWMutex
	st *state
}

// record is one image as stored. Records never change once made; tags live
// in state.tags so that tagging does not touch them.
type record struct {
	id         string        // "sha256:<hex>" of the config blob
	manifest   v1.Descriptor // the manifest blob, without annotations
	layers     []v1.Descriptor
	created    time.Time
	config     Config
	diffIDs    []v1.Hash
	chains     []v1.Hash
	layerSizes []int64 // uncompressed, per layer
	blobs      []v1.Hash
}

// state is the whole store's metadata: what index.json says. It is
// replaced, never mutated in place, so a failed write of index.json leaves
// the previous state intact.
type state struct {
	images map[string]*record // by ID
	tags   map[string]string  // "name:tag" → ID
}

func newState() *state {
	return &state{images: map[string]*record{}, tags: map[string]string{}}
}

func (st *state) clone() *state {
	return &state{images: maps.Clone(st.images), tags: maps.Clone(st.tags)}
}

// tagsByID returns each image's tags, sorted.
func (st *state) tagsByID() map[string][]string {
	out := map[string][]string{}
	for tag, id := range st.tags {
		out[id] = append(out[id], tag)
	}
	for _, tags := range out {
		sort.Strings(tags)
	}
	return out
}

func (st *state) tagsOf(id string) []string {
	var tags []string
	for tag, tid := range st.tags {
		if tid == id {
			tags = append(tags, tag)
		}
	}
	sort.Strings(tags)
	return tags
}

func (st *state) image(rec *record, tags []string) *Image {
	img := &Image{
		ID:       rec.id,
		RepoTags: slices.Clone(tags),
		Created:  rec.created,
		Config:   rec.config.clone(),
	}
	if img.RepoTags == nil {
		img.RepoTags = []string{}
	}
	for i, d := range rec.diffIDs {
		img.DiffIDs = append(img.DiffIDs, d.String())
		img.Size += rec.layerSizes[i]
	}
	return img
}

func (c Config) clone() Config {
	c.Env = slices.Clone(c.Env)
	c.Entrypoint = slices.Clone(c.Entrypoint)
	c.Cmd = slices.Clone(c.Cmd)
	c.ExposedPorts = slices.Clone(c.ExposedPorts)
	c.Labels = maps.Clone(c.Labels)
	return c
}

// Open opens the store at root, creating it if needed. It removes what a
// crash may have left behind: temp files, and blobs and layers that
// index.json does not reference.
func Open(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	s := &Store{root: abs, now: time.Now, st: newState()}
	for _, d := range []string{abs, s.blobDir(), s.layerDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	if err := clearDir(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("open image store: clean temp dir: %w", err)
	}
	layout := filepath.Join(abs, ocispec.ImageLayoutFile)
	if _, err := os.Stat(layout); errors.Is(err, os.ErrNotExist) {
		data, _ := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
		if err := s.writeFile(layout, data); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	data, err := os.ReadFile(filepath.Join(abs, ocispec.ImageIndexFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := s.persist(s.st); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("open image store: %w", err)
	default:
		st, err := s.readIndex(data)
		if err != nil {
			return nil, fmt.Errorf("open image store %s: %w", abs, err)
		}
		s.st = st
	}
	if err := s.gc(); err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	return s, nil
}

func (s *Store) blobDir() string  { return filepath.Join(s.root, ocispec.ImageBlobsDir, "sha256") }
func (s *Store) layerDir() string { return filepath.Join(s.root, "layers") }
func (s *Store) tmpDir() string   { return filepath.Join(s.root, "tmp") }

func (s *Store) blobPath(h v1.Hash) string  { return filepath.Join(s.blobDir(), h.Hex) }
func (s *Store) layerPath(h v1.Hash) string { return filepath.Join(s.layerDir(), h.Hex) }

func (s *Store) readIndex(data []byte) (*state, error) {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	st := newState()
	byManifest := map[v1.Hash]*record{}
	for _, d := range idx.Manifests {
		rec := byManifest[d.Digest]
		if rec == nil {
			if rec, err = s.readRecord(d); err != nil {
				return nil, fmt.Errorf("index.json: manifest %s: %w", d.Digest, err)
			}
			byManifest[d.Digest] = rec
			st.images[rec.id] = rec
		}
		if ref := d.Annotations[ocispec.AnnotationRefName]; ref != "" {
			st.tags[ref] = rec.id
		}
	}
	return st, nil
}

func (s *Store) readRecord(d v1.Descriptor) (*record, error) {
	mdata, err := s.readBlob(d.Digest)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(mdata))
	if err != nil {
		return nil, err
	}
	cdata, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return nil, err
	}
	var sizes []int64
	if v := d.Annotations[annotationLayerSizes]; v != "" {
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("annotation %s: %w", annotationLayerSizes, err)
			}
			sizes = append(sizes, n)
		}
	}
	return newRecord(d, m, cdata, sizes)
}

func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	if h.Algorithm != "sha256" {
		return nil, invalidf("unsupported digest %s", h)
	}
	f, err := os.Open(s.blobPath(h))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", h, err)
	}
	defer f.Close()
	return readAllLimited(f, h.String())
}

// newRecord builds a record from a manifest and its config blob. sizes may
// be nil when unknown.
func newRecord(mdesc v1.Descriptor, m *v1.Manifest, cdata []byte, sizes []int64) (*record, error) {
	cf, err := v1.ParseConfigFile(bytes.NewReader(cdata))
	if err != nil {
		return nil, invalidf("config: %w", err)
	}
	if m.Config.Digest.Algorithm != "sha256" {
		return nil, invalidf("config digest %s: only sha256 is supported", m.Config.Digest)
	}
	if n, l := len(cf.RootFS.DiffIDs), len(m.Layers); n != l {
		return nil, invalidf("config lists %d layers, manifest %d", n, l)
	}
	for _, d := range cf.RootFS.DiffIDs {
		if d.Algorithm != "sha256" {
			return nil, invalidf("diff ID %s: only sha256 is supported", d)
		}
	}
	for _, l := range m.Layers {
		if l.Digest.Algorithm != "sha256" {
			return nil, invalidf("layer digest %s: only sha256 is supported", l.Digest)
		}
	}
	if sizes == nil {
		sizes = make([]int64, len(m.Layers))
	}
	if len(sizes) != len(m.Layers) {
		return nil, invalidf("%d layer sizes for %d layers", len(sizes), len(m.Layers))
	}
	mdesc.Annotations = nil
	mdesc.Platform = nil
	rec := &record{
		id:         m.Config.Digest.String(),
		manifest:   mdesc,
		layers:     slices.Clone(m.Layers),
		created:    cf.Created.Time,
		config:     configFrom(cf.Config),
		diffIDs:    slices.Clone(cf.RootFS.DiffIDs),
		chains:     chainIDs(cf.RootFS.DiffIDs),
		layerSizes: slices.Clone(sizes),
		blobs:      []v1.Hash{mdesc.Digest, m.Config.Digest},
	}
	for _, l := range m.Layers {
		rec.blobs = append(rec.blobs, l.Digest)
	}
	return rec, nil
}

func configFrom(c v1.Config) Config {
	out := Config{
		Env:        slices.Clone(c.Env),
		Entrypoint: slices.Clone(c.Entrypoint),
		Cmd:        slices.Clone(c.Cmd),
		WorkingDir: c.WorkingDir,
		User:       c.User,
		StopSignal: c.StopSignal,
		Labels:     maps.Clone(c.Labels),
	}
	for p := range c.ExposedPorts {
		out.ExposedPorts = append(out.ExposedPorts, p)
	}
	sort.Strings(out.ExposedPorts)
	return out
}

func (c *Config) toV1() v1.Config {
	if c == nil {
		return v1.Config{}
	}
	out := v1.Config{
		Env:        slices.Clone(c.Env),
		Entrypoint: slices.Clone(c.Entrypoint),
		Cmd:        slices.Clone(c.Cmd),
		WorkingDir: c.WorkingDir,
		User:       c.User,
		StopSignal: c.StopSignal,
		Labels:     maps.Clone(c.Labels),
	}
	if len(c.ExposedPorts) > 0 {
		out.ExposedPorts = map[string]struct{}{}
		for _, p := range c.ExposedPorts {
			if !strings.Contains(p, "/") {
				p += "/tcp" // as Docker's EXPOSE does
			}
			out.ExposedPorts[p] = struct{}{}
		}
	}
	return out
}

// persist writes st as index.json, atomically: the file is replaced, never
// rewritten in place.
func (s *Store) persist(st *state) error {
	byID := st.tagsByID()
	ids := slices.Sorted(maps.Keys(st.images))
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
	for _, id := range ids {
		rec := st.images[id]
		sizes := make([]string, len(rec.layerSizes))
		for i, n := range rec.layerSizes {
			sizes[i] = strconv.FormatInt(n, 10)
		}
		desc := func(tag string) v1.Descriptor {
			d := rec.manifest
			d.Annotations = map[string]string{}
			if len(sizes) > 0 {
				d.Annotations[annotationLayerSizes] = strings.Join(sizes, ",")
			}
			if tag != "" {
				d.Annotations[ocispec.AnnotationRefName] = tag
			}
			return d
		}
		tags := byID[id]
		if len(tags) == 0 {
			idx.Manifests = append(idx.Manifests, desc(""))
		}
		for _, tag := range tags {
			idx.Manifests = append(idx.Manifests, desc(tag))
		}
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("encode index.json: %w", err)
	}
	if err := s.writeFile(filepath.Join(s.root, ocispec.ImageIndexFile), data); err != nil {
		return fmt.Errorf("write index.json: %w", err)
	}
	return nil
}

// writeFile replaces path with data durably: temp file, fsync, rename,
// fsync of the directory.
func (s *Store) writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(s.tmpDir(), "write-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// gc removes blobs and layer dirs no image references: leftovers of a crash
// between putting content in place and committing index.json.
func (s *Store) gc() error {
	blobs, chains := s.st.referenced()
	entries, err := os.ReadDir(s.blobDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !blobs[e.Name()] {
			if err := os.RemoveAll(filepath.Join(s.blobDir(), e.Name())); err != nil {
				return err
			}
		}
	}
	entries, err = os.ReadDir(s.layerDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !chains[e.Name()] {
			if err := s.removeLayer(e.Name()); err != nil {
				return err
			}
		}
	}
	return nil
}

// referenced returns the hex digests of all blobs and chain IDs in use.
func (st *state) referenced() (blobs, chains map[string]bool) {
	blobs, chains = map[string]bool{}, map[string]bool{}
	for _, rec := range st.images {
		for _, b := range rec.blobs {
			blobs[b.Hex] = true
		}
		for _, c := range rec.chains {
			chains[c.Hex] = true
		}
	}
	return blobs, chains
}

// removeLayer deletes layers/<hex>. It renames the dir out of layers/
// first, so that a crash half way through never leaves a partial layer
// under a chain ID, where it would look complete.
func (s *Store) removeLayer(hex string) error {
	tmp, err := os.MkdirTemp(s.tmpDir(), "rm-")
	if err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(s.layerDir(), hex), filepath.Join(tmp, "layer")); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.RemoveAll(tmp)
}

// Get finds an image by "name:tag", "name" (meaning name:latest), full ID
// "sha256:<hex>", bare hex ID, or a unique ID prefix of at least 4 hex
// digits. A tag wins over an ID prefix that looks the same, as in Docker.
func (s *Store) Get(ref string) (*Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rec, _, err := s.st.resolve(ref)
	if err != nil {
		return nil, err
	}
	return s.st.image(rec, s.st.tagsOf(rec.id)), nil
}

// resolve finds the image ref names; tag is the "name:tag" when ref named
// a tag rather than an ID.
func (st *state) resolve(ref string) (rec *record, tag string, err error) {
	if ref == "" {
		return nil, "", invalidf("invalid reference format: empty reference")
	}
	if hex, ok := strings.CutPrefix(ref, "sha256:"); ok {
		rec, err := st.byPrefix(hex, ref)
		return rec, "", err
	}
	full, err := parseRef(ref)
	if err == nil {
		if id, ok := st.tags[full]; ok {
			return st.images[id], full, nil
		}
	}
	if !hexRe.MatchString(ref) {
		if err != nil {
			return nil, "", err
		}
		return nil, "", notFoundf("no such image: %s", full)
	}
	rec, err = st.byPrefix(ref, ref)
	return rec, "", err
}

func (st *state) byPrefix(prefix, ref string) (*record, error) {
	if len(prefix) < 4 || len(prefix) > 64 || !hexRe.MatchString(prefix) {
		return nil, notFoundf("no such image: %s", ref)
	}
	var found *record
	n := 0
	for id, rec := range st.images {
		if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), prefix) {
			found = rec
			n++
		}
	}
	switch n {
	case 0:
		return nil, notFoundf("no such image: %s", ref)
	case 1:
		return found, nil
	}
	return nil, invalidf("image ID prefix %s is ambiguous: it matches %d images", ref, n)
}

// List returns all images, newest first (then by ID).
func (s *Store) List() ([]*Image, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	byID := s.st.tagsByID()
	out := make([]*Image, 0, len(s.st.images))
	for id, rec := range s.st.images {
		out = append(out, s.st.image(rec, byID[id]))
	}
	sortImages(out)
	return out, nil
}

func sortImages(imgs []*Image) {
	sort.Slice(imgs, func(i, j int) bool {
		if !imgs[i].Created.Equal(imgs[j].Created) {
			return imgs[i].Created.After(imgs[j].Created)
		}
		return imgs[i].ID < imgs[j].ID
	})
}

// Tag points newRef ("name[:tag]") at the image ref names. A tag that
// pointed elsewhere moves, and the image it leaves may become dangling.
func (s *Store) Tag(ref, newRef string) error {
	full, err := parseRef(newRef)
	if err != nil {
		return fmt.Errorf("tag: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, _, err := s.st.resolve(ref)
	if err != nil {
		return err
	}
	if s.st.tags[full] == rec.id {
		return nil
	}
	next := s.st.clone()
	next.tags[full] = rec.id
	if err := s.persist(next); err != nil {
		return fmt.Errorf("tag %s: %w", full, err)
	}
	s.st = next
	return nil
}

// LayerDirs returns the unpacked directories of the image's layers, lowest
// first, ready to be overlayfs lower dirs (overlayfs wants them the other
// way round: lowerdir=top:...:bottom). They are shared with other images
// and must not be written to.
func (s *Store) LayerDirs(img *Image) ([]string, error) {
	if img == nil {
		return nil, invalidf("layer dirs: nil image")
	}
	diffIDs := make([]v1.Hash, len(img.DiffIDs))
	for i, d := range img.DiffIDs {
		h, err := v1.NewHash(d)
		if err != nil {
			return nil, invalidf("layer dirs of %s: diff ID %q: %w", img.ID, d, err)
		}
		diffIDs[i] = h
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.st.images[img.ID]; !ok {
		return nil, notFoundf("no such image: %s", img.ID)
	}
	var dirs []string
	for _, c := range chainIDs(diffIDs) {
		dir := s.layerPath(c)
		if _, err := os.Stat(dir); err != nil {
			return nil, notFoundf("layer %s of image %s: %v", c, img.ID, err)
		}
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

func (s *Store) inUse(id string) (string, bool) {
	if s.InUse == nil {
		return "", false
	}
	return s.InUse(id)
}

func readAllLimited(r io.Reader, what string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxJSON+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(data) > maxJSON {
		return nil, invalidf("%s: larger than %d bytes", what, maxJSON)
	}
	return data, nil
}
