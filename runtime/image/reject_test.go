package image

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestLoadRejects feeds hostile and broken archives to a store that already
// holds an image, and checks that each is refused with ErrInvalid and a
// message naming the problem, that nothing outside the store was touched,
// and that the store is exactly as before: same index.json, blobs, layers,
// and no temp files.
func TestLoadRejects(t *testing.T) {
	requiresRoot(t)
	// host stands for the host's /etc: a symlink in a layer points at it.
	host := t.TempDir()
	sentinel := filepath.Join(host, "passwd")
	if err := os.WriteFile(sentinel, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := mkTar(t, file("ok", "ok"))
	save := func(layers ...[]byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			return dockerSave(t, legacySave, testImage{tags: []string{"foo:latest"}, layers: append([][]byte{good}, layers...)})
		}
	}
	for _, tc := range []struct {
		name    string
		archive func(t *testing.T) []byte
		wantErr string
	}{
		{"dotdot escape", save(mkTar(t, file("../escape", "x"))),
			`load: layer 2 of foo:latest: entry "../escape" escapes the layer root`},
		{"nested dotdot escape", save(mkTar(t, dir("a/"), file("a/../../x", "x"))),
			`entry "a/../../x" escapes the layer root`},
		{"absolute symlink then write through", save(mkTar(t, symlink("etc", host), file("etc/passwd", "pwned"))),
			"etc/passwd: path etc goes through a symlink"},
		{"relative symlink then write through", save(mkTar(t, dir("a/"), symlink("a/up", "../../../../../../../.."+host), file("a/up/passwd", "pwned"))),
			"a/up/passwd: path a/up goes through a symlink"},
		{"whiteout through symlink", save(mkTar(t, symlink("etc", host), whiteout("etc/passwd"))),
			"etc/.wh.passwd: path etc goes through a symlink"},
		{"opaque through symlink", save(mkTar(t, symlink("etc", host), opaque("etc"))),
			"etc/.wh..wh..opq: path etc goes through a symlink"},
		{"hardlink escape", save(mkTar(t, hardlink("x", "../../../../../.."+sentinel))),
			"hardlink x -> ../../../../../.." + sentinel + ": target escapes the layer root"},
		{"hardlink through symlink", save(mkTar(t, symlink("etc", host), hardlink("stolen", "etc/passwd"))),
			"hardlink stolen -> etc/passwd: path etc goes through a symlink"},
		{"hardlink to missing", save(mkTar(t, hardlink("x", "nope"))),
			"hardlink x -> nope: target not a file in this layer"},
		{"diff ID mismatch", func(t *testing.T) []byte {
			ti := testImage{tags: []string{"foo:latest"}, layers: [][]byte{good, mkTar(t, file("b", "b"))}}
			ti.diffIDs = []v1.Hash{digestOf(good), digestOf([]byte("something else"))}
			return dockerSave(t, legacySave, ti)
		}, "load: layer 2 of foo:latest: diff ID mismatch"},
		{"second image broken", func(t *testing.T) []byte {
			ok := testImage{tags: []string{"fine:1"}, layers: [][]byte{mkTar(t, file("fine", "fine"))}}
			bad := testImage{tags: []string{"bad:1"}, layers: [][]byte{mkTar(t, file("../x", "x"))}}
			return dockerSave(t, blobsSave, ok, bad)
		}, "layer 1 of bad:1"},
		{"OCI blob digest mismatch", func(t *testing.T) []byte {
			layer := mkTar(t, file("data", "payload-1234"))
			ti := testImage{layers: [][]byte{layer}, ann: map[string]string{"org.opencontainers.image.ref.name": "x:1"}}
			// Swap the layer's content for other bytes of the same length.
			return bytes.Replace(ociLayout(t, ti), []byte("payload-1234"), []byte("payload-4321"), 1)
		}, "load: layer 1 of x:1: blob digest mismatch"},
		{"OCI blob corrupt header", func(t *testing.T) []byte {
			layer := mkTar(t, file("name-1234", "x"))
			ti := testImage{layers: [][]byte{layer}, ann: map[string]string{"org.opencontainers.image.ref.name": "x:1"}}
			// The tar header checksum no longer matches; the digest tells why.
			return bytes.Replace(ociLayout(t, ti), []byte("name-1234"), []byte("name-4321"), 1)
		}, "load: layer 1 of x:1: blob digest mismatch"},
		{"manifest.json unknown format", func(t *testing.T) []byte {
			return mkArchive(t, []archiveFile{{name: "manifest.json", body: []byte(`{"schemaVersion":2}`)}})
		}, "load: manifest.json: unknown format"},
		{"no manifest at all", func(t *testing.T) []byte {
			return mkArchive(t, []archiveFile{{name: "hello", body: []byte("hi")}})
		}, "load: unknown archive format"},
		{"not a tar", func(t *testing.T) []byte { return []byte("definitely not a tar archive") }, "load: not a tar archive"},
		{"missing layer", func(t *testing.T) []byte {
			return mkArchive(t, []archiveFile{{name: "manifest.json", body: []byte(`[{"Config":"c.json","RepoTags":["m:1"],"Layers":["nope/layer.tar"]}]`)},
				{name: "c.json", body: testImage{layers: [][]byte{good}}.configJSON(t)}})
		}, "layer 1 of m:1: nope/layer.tar: missing from the archive"},
		{"archive entry escape", func(t *testing.T) []byte { return mkTar(t, file("../outside", "x")) }, `archive entry "../outside" escapes the archive root`},
		{"archive symlink out", func(t *testing.T) []byte {
			return mkArchive(t, []archiveFile{
				{name: "manifest.json", body: []byte(`[{"Config":"c.json","RepoTags":["m:1"],"Layers":["l/layer.tar"]}]`)},
				{name: "c.json", body: testImage{layers: [][]byte{good}}.configJSON(t)},
				{name: "l/layer.tar", link: sentinel},
			})
		}, "layer 1 of m:1: l/layer.tar"},
		{"bad tag", func(t *testing.T) []byte {
			return dockerSave(t, legacySave, testImage{tags: []string{"Bad:Tag"}, layers: [][]byte{good}})
		}, "invalid reference format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			mustLoad(t, s, dockerSave(t, legacySave, testImage{tags: []string{"existing:1"}, layers: [][]byte{mkTar(t, file("e", "e"))}}))
			before := takeSnapshot(t, s)

			_, err := s.Load(bytes.NewReader(tc.archive(t)))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Load error = %v\nwant ErrInvalid containing %q", err, tc.wantErr)
			}
			if after := takeSnapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Errorf("failed Load changed the store:\nbefore %+v\nafter  %+v", before, after)
			}
			if got := readFile(t, sentinel); got != "host" {
				t.Fatalf("host file overwritten: %q", got)
			}
			if names := dirNames(t, host); len(names) != 1 {
				t.Fatalf("host dir gained files: %v", names)
			}
			if list, _ := s.List(); len(list) != 1 {
				t.Errorf("store lists %d images, want the 1 it had", len(list))
			}
		})
	}
}
