package image

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"foo", "foo:latest"},
		{"foo:1.2", "foo:1.2"},
		{"library/foo", "foo:latest"},
		{"docker.io/library/foo:v1", "foo:v1"},
		{"index.docker.io/user/foo", "user/foo:latest"},
		{"localhost/foo", "localhost/foo:latest"},
		{"localhost:5000/a/b:c", "localhost:5000/a/b:c"},
		{"example.com/a__b/c-d.e:Tag_1", "example.com/a__b/c-d.e:Tag_1"},
		{"Foo", ""},
		{"foo:", ""},
		{"foo:-bad", ""},
		{"foo@sha256:" + strings.Repeat("a", 64), ""},
		{"foo//bar", ""},
		{strings.Repeat("ab", 32), ""},
		{"", ""},
	} {
		got, err := parseRef(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("parseRef(%q) = %q, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseRef(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestGetAndTag(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	a := mustImport(t, s, mkTar(t, file("a", "a")), "foo:1", nil)
	b := mustImport(t, s, mkTar(t, file("b", "b")), "bar", nil)
	if err := s.Tag("foo:1", "foo"); err != nil {
		t.Fatal(err)
	}
	if err := s.Tag(b.ID[len("sha256:"):][:12], "docker.io/library/baz:2"); err != nil {
		t.Fatal(err)
	}
	hexA := strings.TrimPrefix(a.ID, "sha256:")

	for _, tc := range []struct {
		ref     string
		want    string // image ID; "" means an error
		wantErr error
		msg     string
	}{
		{ref: "foo:1", want: a.ID},
		{ref: "foo", want: a.ID},
		{ref: "foo:latest", want: a.ID},
		{ref: "docker.io/library/foo:1", want: a.ID},
		{ref: "bar", want: b.ID},
		{ref: "baz:2", want: b.ID},
		{ref: a.ID, want: a.ID},
		{ref: hexA, want: a.ID},
		{ref: hexA[:12], want: a.ID},
		{ref: hexA[:4], want: a.ID},
		{ref: "sha256:" + hexA[:8], want: a.ID},
		{ref: hexA[:3], wantErr: ErrNotFound, msg: "no such image: " + hexA[:3]},
		{ref: "foo:2", wantErr: ErrNotFound, msg: "no such image: foo:2"},
		{ref: "nosuch", wantErr: ErrNotFound, msg: "no such image: nosuch:latest"},
		{ref: "sha256:" + strings.Repeat("0", 64), wantErr: ErrNotFound, msg: "no such image: sha256:" + strings.Repeat("0", 64)},
		{ref: "UPPER", wantErr: ErrInvalid, msg: "invalid reference format"},
	} {
		img, err := s.Get(tc.ref)
		if tc.want != "" {
			if err != nil || img.ID != tc.want {
				t.Errorf("Get(%q) = %v, %v; want %s", tc.ref, img, err, tc.want)
			}
			continue
		}
		if !errors.Is(err, tc.wantErr) || err.Error() != tc.msg && !strings.HasPrefix(err.Error(), tc.msg) {
			t.Errorf("Get(%q) error = %v; want %v with message %q", tc.ref, err, tc.wantErr, tc.msg)
		}
	}

	got, err := s.Get("foo")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"foo:1", "foo:latest"}; !slices.Equal(got.RepoTags, want) {
		t.Errorf("RepoTags = %v, want %v", got.RepoTags, want)
	}

	// Moving a tag.
	if err := s.Tag("bar", "foo:1"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("foo:1"); got == nil || got.ID != b.ID {
		t.Errorf("foo:1 did not move to %s", b.ID)
	}
	if err := s.Tag("nosuch", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tag of a missing image: %v, want ErrNotFound", err)
	}
	if err := s.Tag("bar", "Bad:Ref"); !errors.Is(err, ErrInvalid) {
		t.Errorf("Tag to a bad ref: %v, want ErrInvalid", err)
	}

	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != b.ID || list[1].ID != a.ID {
		t.Errorf("List order = %v, want newest (%s) first", list, b.ID)
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	st := newState()
	for _, id := range []string{"sha256:abcd1111", "sha256:abcd2222"} {
		st.images[id] = &record{id: id}
	}
	if _, _, err := st.resolve("abcd"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("resolve(abcd) = %v, want an ambiguity error", err)
	}
	if rec, _, err := st.resolve("abcd1"); err != nil || rec.id != "sha256:abcd1111" {
		t.Errorf("resolve(abcd1) = %v, %v", rec, err)
	}
}

func TestReopen(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	mustLoad(t, s, dockerSave(t, legacySave, twoLayerImage(t, "foo:latest", "foo:2")))
	mustImport(t, s, mkTar(t, file("x", "x")), "", nil)
	mustImport(t, s, gz(t, mkTar(t, file("y", "y"))), "imp", &Config{Cmd: []string{"y"}, Labels: map[string]string{"a": "b"}})
	before, err := s.List()
	if err != nil {
		t.Fatal(err)
	}

	// Leftovers of a crash: a temp dir, an orphan blob, an orphan layer.
	junk := []string{
		filepath.Join(s.tmpDir(), "load-123", "half"),
		filepath.Join(s.blobDir(), strings.Repeat("e", 64)),
		filepath.Join(s.layerDir(), strings.Repeat("f", 64), "file"),
	}
	for _, p := range junk {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	s2, err := Open(s.root)
	if err != nil {
		t.Fatal(err)
	}
	after, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("reopened store lists\n%+v\nwant\n%+v", after, before)
	}
	for _, img := range after {
		want := mustLayerDirs(t, s, img)
		if got := mustLayerDirs(t, s2, img); !slices.Equal(got, want) {
			t.Errorf("LayerDirs after reopen = %v, want %v", got, want)
		}
	}
	for _, p := range []string{filepath.Join(s.tmpDir(), "load-123"), junk[1], filepath.Dir(junk[2])} {
		assertMissing(t, p)
	}
	want, err := s.Get("foo:2")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Get("foo:2"); err != nil || got.ID != want.ID {
		t.Errorf("Get(foo:2) after reopen = %v, %v; want %s", got, err, want.ID)
	}
}

// The index.json written is an OCI image layout other tools can read.
func TestIndexIsOCILayout(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	img := mustImport(t, s, mkTar(t, file("x", "x")), "example.com/x:1", nil)
	mustImport(t, s, mkTar(t, file("y", "y")), "", nil)
	data, err := os.ReadFile(filepath.Join(s.root, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range idx.Manifests {
		names = append(names, d.Annotations["org.opencontainers.image.ref.name"])
		if _, err := os.Stat(filepath.Join(s.blobDir(), d.Digest.Hex)); err != nil {
			t.Errorf("manifest blob %s: %v", d.Digest, err)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"", "example.com/x:1"}) {
		t.Errorf("ref names = %q, want one tagged and one dangling entry", names)
	}
	if got := readFile(t, filepath.Join(s.root, "oci-layout")); !strings.Contains(got, `"imageLayoutVersion":"1.0.0"`) {
		t.Errorf("oci-layout = %s", got)
	}
	if _, err := os.Stat(filepath.Join(s.blobDir(), strings.TrimPrefix(img.ID, "sha256:"))); err != nil {
		t.Errorf("config blob: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	var mu sync.Mutex
	clock := testTime
	s.now = func() (now time.Time) {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Second)
		return clock
	}
	shared := mkTar(t, file("shared", "same content in every import"))
	var archives [][]byte
	for i := range 8 {
		archives = append(archives, dockerSave(t, legacySave, testImage{
			tags:   []string{fmt.Sprintf("loaded%d", i)},
			layers: [][]byte{shared, mkTar(t, file("n", fmt.Sprint(i)))},
		}))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Go(func() {
			ref := fmt.Sprintf("img%d", i)
			if _, err := s.Import(bytes.NewReader(shared), ref, nil); err != nil {
				errs <- err
				return
			}
			if _, err := s.Load(bytes.NewReader(archives[i])); err != nil {
				errs <- err
				return
			}
			if _, err := s.Get(ref); err != nil {
				errs <- err
			}
			if _, err := s.List(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 16 {
		t.Errorf("List has %d images, want 16", len(list))
	}
	// One shared base plus 8 distinct tops.
	if n := len(dirNames(t, s.layerDir())); n != 9 {
		t.Errorf("layers/ holds %d dirs, want 9", n)
	}
	if tmp := dirNames(t, s.tmpDir()); len(tmp) != 0 {
		t.Errorf("tmp/ left behind: %v", tmp)
	}
}
