package image

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// twoLayerImage has a base layer and a second layer that deletes a file
// with a whiteout, makes opt/ opaque and changes a file.
func twoLayerImage(t *testing.T, tags ...string) testImage {
	base := mkTar(t,
		dir("etc/"), file("etc/hostname", "one"), file("etc/passwd", "root:x:0:0::/root:/bin/sh"),
		dir("opt/"), file("opt/a", "a"), file("opt/b", "b"),
		dir("keep/"), file("keep/x", "x"),
		file("deleted.txt", "gone soon"),
	)
	top := mkTar(t,
		whiteout("deleted.txt"),
		dir("opt/"), opaque("opt"), file("opt/c", "c"),
		dir("etc/"), file("etc/hostname", "two"),
	)
	return testImage{
		tags:   tags,
		layers: [][]byte{base, top},
		config: v1.Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}, ExposedPorts: map[string]struct{}{"80/tcp": {}, "53/udp": {}}},
	}
}

func TestLoadDockerSaveWhiteouts(t *testing.T) {
	requiresRoot(t)
	for _, tc := range []struct {
		name    string
		archive func(t *testing.T) []byte
	}{
		{"legacy layer.tar", func(t *testing.T) []byte { return dockerSave(t, legacySave, twoLayerImage(t, "foo:latest")) }},
		{"blobs layout", func(t *testing.T) []byte { return dockerSave(t, blobsSave, twoLayerImage(t, "foo:latest")) }},
		{"gzipped archive", func(t *testing.T) []byte { return gz(t, dockerSave(t, legacySave, twoLayerImage(t, "foo:latest"))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			imgs := mustLoad(t, s, tc.archive(t))
			if len(imgs) != 1 {
				t.Fatalf("Load returned %d images, want 1", len(imgs))
			}
			img := imgs[0]
			if want := []string{"foo:latest"}; !slices.Equal(img.RepoTags, want) {
				t.Errorf("RepoTags = %v, want %v", img.RepoTags, want)
			}
			if len(img.DiffIDs) != 2 {
				t.Fatalf("DiffIDs = %v, want 2", img.DiffIDs)
			}
			if want := []string{"53/udp", "80/tcp"}; !slices.Equal(img.Config.ExposedPorts, want) {
				t.Errorf("ExposedPorts = %v, want %v", img.Config.ExposedPorts, want)
			}
			if !img.Created.Equal(testTime) {
				t.Errorf("Created = %v, want %v", img.Created, testTime)
			}
			got, err := s.Get("foo")
			if err != nil || got.ID != img.ID {
				t.Fatalf("Get(foo) = %v, %v; want %s", got, err, img.ID)
			}

			dirs := mustLayerDirs(t, s, img)
			if len(dirs) != 2 {
				t.Fatalf("LayerDirs = %v", dirs)
			}
			// The top layer holds overlayfs forms of the whiteouts.
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dirs[1], "deleted.txt"), &st); err != nil {
				t.Fatalf("whiteout: %v", err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
				t.Errorf("whiteout is mode %o rdev %d, want a 0:0 char device", st.Mode, st.Rdev)
			}
			assertMissing(t, filepath.Join(dirs[1], ".wh.deleted.txt"))
			assertMissing(t, filepath.Join(dirs[1], "opt", whiteoutOpaque))
			buf := make([]byte, 8)
			n, err := unix.Lgetxattr(filepath.Join(dirs[1], "opt"), overlayOpaque, buf)
			if err != nil || string(buf[:n]) != "y" {
				t.Errorf("opt opaque xattr = %q, %v; want y", buf[:n], err)
			}

			mnt := mountOverlay(t, dirs)
			assertMissing(t, filepath.Join(mnt, "deleted.txt"))
			entries, err := os.ReadDir(filepath.Join(mnt, "opt"))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"c"}) {
				t.Errorf("opaque opt/ shows %v, want only layer 2's [c]", names)
			}
			if got := readFile(t, filepath.Join(mnt, "etc/hostname")); got != "two" {
				t.Errorf("etc/hostname = %q, want two", got)
			}
			if got := readFile(t, filepath.Join(mnt, "etc/passwd")); !strings.HasPrefix(got, "root:") {
				t.Errorf("etc/passwd from layer 1 = %q", got)
			}
			if got := readFile(t, filepath.Join(mnt, "keep/x")); got != "x" {
				t.Errorf("keep/x = %q, want x", got)
			}
		})
	}
}

func TestLoadOCIArchive(t *testing.T) {
	requiresRoot(t)
	gzLayer := gz(t, mkTar(t, dir("app/"), file("app/run.sh", "#!/bin/sh\necho hi\n")))
	plainLayer := mkTar(t, file("data.txt", "data"))
	imgs := []testImage{
		// ref.name holds only a tag: the name comes from containerd's annotation.
		{layers: [][]byte{gzLayer}, config: v1.Config{Cmd: []string{"one"}},
			ann: map[string]string{"org.opencontainers.image.ref.name": "v1", annotationContainerdName: "docker.io/library/app:v1"}},
		// ref.name holds a full reference.
		{layers: [][]byte{gzLayer, plainLayer}, config: v1.Config{Cmd: []string{"two"}},
			ann: map[string]string{"org.opencontainers.image.ref.name": "registry.local:5000/team/other:2.0"}},
		// Only a tag and no name: loaded untagged.
		{layers: [][]byte{plainLayer}, config: v1.Config{Cmd: []string{"three"}},
			ann: map[string]string{"org.opencontainers.image.ref.name": "v3"}},
	}
	for _, tc := range []struct {
		name string
		wrap func([]byte) []byte
	}{
		{"tar", func(b []byte) []byte { return b }},
		{"tar.gz", func(b []byte) []byte { return gz(t, b) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			loaded := mustLoad(t, s, tc.wrap(ociLayout(t, imgs...)))
			if len(loaded) != 3 {
				t.Fatalf("Load returned %d images, want 3", len(loaded))
			}
			wantTags := [][]string{{"app:v1"}, {"registry.local:5000/team/other:2.0"}, {}}
			for i, img := range loaded {
				if !slices.Equal(img.RepoTags, wantTags[i]) {
					t.Errorf("image %d RepoTags = %v, want %v", i+1, img.RepoTags, wantTags[i])
				}
				if want := digestOf(imgs[i].configJSON(t)).String(); img.ID != want {
					t.Errorf("image %d ID = %s, want config digest %s", i+1, img.ID, want)
				}
			}
			app, err := s.Get("docker.io/library/app:v1")
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(len(gunzipIfNeeded(t, gzLayer))); app.Size != want {
				t.Errorf("Size = %d, want uncompressed %d", app.Size, want)
			}
			dirs := mustLayerDirs(t, s, app)
			if got := readFile(t, filepath.Join(dirs[0], "app/run.sh")); !strings.Contains(got, "echo hi") {
				t.Errorf("run.sh = %q", got)
			}
			// The gzip blob and the original manifest are stored as they came.
			if _, err := os.Stat(filepath.Join(s.blobDir(), digestOf(gzLayer).Hex)); err != nil {
				t.Errorf("gzip layer blob not stored as is: %v", err)
			}
			if _, err := os.Stat(filepath.Join(s.blobDir(), digestOf(imgs[0].manifestJSON(t)).Hex)); err != nil {
				t.Errorf("manifest blob not stored as is: %v", err)
			}
			other, err := s.Get("registry.local:5000/team/other:2.0")
			if err != nil {
				t.Fatal(err)
			}
			if od := mustLayerDirs(t, s, other); od[0] != dirs[0] {
				t.Errorf("shared gzip base unpacked twice: %s vs %s", od[0], dirs[0])
			}
		})
	}
}

// A nested index, as `ctr export` and multi-platform Docker exports write,
// yields this platform's image.
func TestLoadOCINestedIndex(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	ti := testImage{layers: [][]byte{mkTar(t, file("hello", "world"))}}
	cfg, m := ti.configJSON(t), ti.manifestJSON(t)
	other := "arm"
	if runtime.GOARCH == "arm" {
		other = "amd64"
	}
	nested := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{
		// Another platform whose blobs the export left out.
		{MediaType: types.OCIManifestSchema1, Size: 10, Digest: digestOf([]byte("absent")), Platform: &v1.Platform{OS: "linux", Architecture: other}},
		{MediaType: types.OCIManifestSchema1, Size: int64(len(m)), Digest: digestOf(m), Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}},
	}}
	nestedData := mustJSON(t, nested)
	top := v1.IndexManifest{SchemaVersion: 2, Manifests: []v1.Descriptor{{
		MediaType: types.OCIImageIndex, Size: int64(len(nestedData)), Digest: digestOf(nestedData),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": "example.com/multi:1"},
	}}}
	archive := mkArchive(t, []archiveFile{
		{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{name: "index.json", body: mustJSON(t, top)},
		{name: "blobs/sha256/" + digestOf(nestedData).Hex, body: nestedData},
		{name: "blobs/sha256/" + digestOf(m).Hex, body: m},
		{name: "blobs/sha256/" + digestOf(cfg).Hex, body: cfg},
		{name: "blobs/sha256/" + digestOf(ti.layers[0]).Hex, body: ti.layers[0]},
	})
	imgs := mustLoad(t, s, archive)
	if len(imgs) != 1 || !slices.Equal(imgs[0].RepoTags, []string{"example.com/multi:1"}) {
		t.Fatalf("Load = %+v", imgs)
	}
	if imgs[0].ID != digestOf(cfg).String() {
		t.Errorf("ID = %s, want %s", imgs[0].ID, digestOf(cfg))
	}
}

func TestLoadSharedBaseUnpackedOnce(t *testing.T) {
	requiresRoot(t)
	base := mkTar(t, dir("usr/"), file("usr/base", "base"))
	a := testImage{tags: []string{"a:1"}, layers: [][]byte{base, mkTar(t, file("a", "a"))}}
	b := testImage{tags: []string{"b:1"}, layers: [][]byte{base, mkTar(t, file("b", "b"))}}
	c := testImage{tags: []string{"c:1"}, layers: [][]byte{base, mkTar(t, file("c", "c"))}, created: testTime.Add(time.Hour)}

	for _, style := range []saveStyle{legacySave, blobsSave} {
		s := newStore(t)
		// One archive with two images on the same base...
		imgs := mustLoad(t, s, dockerSave(t, style, a, b))
		if len(imgs) != 2 {
			t.Fatalf("style %d: Load returned %d images", style, len(imgs))
		}
		da, db := mustLayerDirs(t, s, imgs[0]), mustLayerDirs(t, s, imgs[1])
		if da[0] != db[0] {
			t.Errorf("style %d: base dirs differ: %s, %s", style, da[0], db[0])
		}
		var before unix.Stat_t
		if err := unix.Stat(da[0], &before); err != nil {
			t.Fatal(err)
		}
		// ...and a later Load of a third: the base is not unpacked again.
		ic := mustLoad(t, s, dockerSave(t, style, c))[0]
		dc := mustLayerDirs(t, s, ic)
		var after unix.Stat_t
		if err := unix.Stat(dc[0], &after); err != nil {
			t.Fatal(err)
		}
		if dc[0] != da[0] || after.Ino != before.Ino || after.Ctim != before.Ctim {
			t.Errorf("style %d: base layer was unpacked again", style)
		}
		if got := dirNames(t, s.layerDir()); len(got) != 4 {
			t.Errorf("style %d: layers/ holds %d dirs %v, want 4 (base + 3 tops)", style, len(got), got)
		}
		if got := readFile(t, filepath.Join(da[0], "usr/base")); got != "base" {
			t.Errorf("base content = %q", got)
		}
	}
}

// Loading an image again only moves tags; a tag that moves away leaves its
// old image dangling, as in Docker.
func TestLoadMovesTags(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	old := testImage{tags: []string{"app:latest"}, layers: [][]byte{mkTar(t, file("v", "1"))}}
	newer := testImage{tags: []string{"app:latest"}, layers: [][]byte{mkTar(t, file("v", "2"))}, created: testTime.Add(time.Hour)}
	o := mustLoad(t, s, dockerSave(t, legacySave, old))[0]
	n := mustLoad(t, s, dockerSave(t, legacySave, newer))[0]

	oldNow, err := s.Get(o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(oldNow.RepoTags) != 0 {
		t.Errorf("old image tags = %v, want dangling", oldNow.RepoTags)
	}
	if got, _ := s.Get("app"); got == nil || got.ID != n.ID {
		t.Errorf("app:latest = %v, want %s", got, n.ID)
	}

	layersBefore := dirNames(t, s.layerDir())
	blobsBefore := dirNames(t, s.blobDir())
	again := mustLoad(t, s, dockerSave(t, legacySave, old))
	if len(again) != 1 || again[0].ID != o.ID || !slices.Equal(again[0].RepoTags, []string{"app:latest"}) {
		t.Errorf("reload = %+v, want old image tagged app:latest", again)
	}
	if got := dirNames(t, s.layerDir()); !slices.Equal(got, layersBefore) {
		t.Errorf("reload changed layers: %v -> %v", layersBefore, got)
	}
	if got := dirNames(t, s.blobDir()); !slices.Equal(got, blobsBefore) {
		t.Errorf("reload changed blobs: %v -> %v", blobsBefore, got)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != n.ID || len(list[0].RepoTags) != 0 {
		t.Errorf("List = %+v, want newer (now dangling) first", list)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
