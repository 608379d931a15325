package image

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRemove(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	base := mkTar(t, dir("usr/"), file("usr/base", "base"))
	imgs := mustLoad(t, s, dockerSave(t, blobsSave,
		testImage{tags: []string{"a:1", "a:2"}, layers: [][]byte{base, mkTar(t, file("a", "a"))}},
		testImage{tags: []string{"b:1"}, layers: [][]byte{base, mkTar(t, file("b", "b"))}},
	))
	a, b := imgs[0], imgs[1]
	dirsA, dirsB := mustLayerDirs(t, s, a), mustLayerDirs(t, s, b)
	aBlobs := s.st.images[a.ID].blobs

	users := map[string]string{a.ID: "c0ffee"}
	s.InUse = func(id string) (string, bool) {
		c, ok := users[id]
		return c, ok
	}

	// With another tag left, untagging is fine even while in use.
	lines, err := s.Remove("a:1", false)
	if err != nil || !slices.Equal(lines, []string{"Untagged: a:1"}) {
		t.Fatalf("Remove(a:1) = %q, %v", lines, err)
	}
	// The last tag and the ID are refused while a container uses the image.
	for _, ref := range []string{"a:2", a.ID, a.ID[7:19]} {
		_, err := s.Remove(ref, false)
		want := "conflict: unable to remove image " + ref + ": image is being used by container c0ffee"
		if !errors.Is(err, ErrInUse) || err.Error() != want {
			t.Errorf("Remove(%s) error = %v, want ErrInUse %q", ref, err, want)
		}
	}
	if got, err := s.Get("a:2"); err != nil || got.ID != a.ID {
		t.Fatalf("refused Remove changed the image: %v, %v", got, err)
	}

	// force untags but keeps the image, which the container's rootfs needs.
	lines, err = s.Remove("a:2", true)
	if err != nil || !slices.Equal(lines, []string{"Untagged: a:2"}) {
		t.Fatalf("Remove(a:2, force) = %q, %v", lines, err)
	}
	kept, err := s.Get(a.ID)
	if err != nil || len(kept.RepoTags) != 0 {
		t.Fatalf("forced Remove of an image in use: Get = %v, %v; want it kept, dangling", kept, err)
	}
	mustLayerDirs(t, s, kept)
	if _, err := s.Remove(a.ID, true); !errors.Is(err, ErrInUse) {
		t.Errorf("force with nothing left to untag: %v, want ErrInUse", err)
	}

	// Once unused, removing by ID deletes it and its unshared content.
	delete(users, a.ID)
	lines, err = s.Remove(a.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	chainTop := "sha256:" + filepath.Base(dirsA[1])
	if want := []string{"Deleted: " + a.ID, "Deleted: " + chainTop}; !slices.Equal(lines, want) {
		t.Errorf("Remove(ID) = %q, want %q", lines, want)
	}
	if _, err := s.Get(a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v, want ErrNotFound", err)
	}
	assertMissing(t, dirsA[1])
	if _, err := os.Stat(dirsA[0]); err != nil {
		t.Errorf("shared base layer removed with a: %v", err)
	}
	for _, h := range aBlobs {
		shared := slices.Contains(s.st.images[b.ID].blobs, h)
		_, err := os.Stat(s.blobPath(h))
		if shared && err != nil {
			t.Errorf("blob %s shared with b was deleted", h)
		}
		if !shared && err == nil {
			t.Errorf("blob %s of a only was kept", h)
		}
	}
	if got := mustLayerDirs(t, s, b); !slices.Equal(got, dirsB) {
		t.Errorf("b's layers changed: %v", got)
	}

	// The last image takes the base with it.
	lines, err = s.Remove("b:1", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 4 || lines[0] != "Untagged: b:1" || lines[1] != "Deleted: "+b.ID {
		t.Errorf("Remove(b:1) = %q", lines)
	}
	if got := dirNames(t, s.layerDir()); len(got) != 0 {
		t.Errorf("layers/ still holds %v", got)
	}
	if got := dirNames(t, s.blobDir()); len(got) != 0 {
		t.Errorf("blobs/ still holds %v", got)
	}
	if _, err := s.Remove("b:1", false); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no such image: b:1") {
		t.Errorf("second Remove: %v", err)
	}
}

func TestPrune(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	tagged := mustImport(t, s, mkTar(t, file("t", "tagged")), "keep", nil)
	dangling := mustImport(t, s, mkTar(t, file("d", "dangling")), "", nil)
	busy := mustImport(t, s, mkTar(t, file("u", "used")), "", nil)
	s.InUse = func(id string) (string, bool) { return "ctr", id == busy.ID }

	var want int64
	for _, h := range s.st.images[dangling.ID].blobs {
		fi, err := os.Stat(s.blobPath(h))
		if err != nil {
			t.Fatal(err)
		}
		want += fi.Size()
	}
	want += dangling.Size
	dirs := mustLayerDirs(t, s, dangling)

	ids, reclaimed, err := s.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{dangling.ID}) {
		t.Errorf("Prune removed %v, want only %s", ids, dangling.ID)
	}
	if reclaimed != want {
		t.Errorf("reclaimed %d bytes, want %d", reclaimed, want)
	}
	assertMissing(t, dirs[0])
	for _, ref := range []string{tagged.ID, busy.ID} {
		if _, err := s.Get(ref); err != nil {
			t.Errorf("Prune removed %s: %v", ref, err)
		}
	}
	ids, reclaimed, err = s.Prune()
	if err != nil || len(ids) != 0 || reclaimed != 0 {
		t.Errorf("second Prune = %v, %d, %v; want nothing", ids, reclaimed, err)
	}
}
