package image

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestManifest(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	img := mustLoad(t, s, ociLayout(t, testImage{
		layers: [][]byte{gz(t, mkTar(t, file("a", "a"))), mkTar(t, file("b", "b"))},
		ann:    map[string]string{"org.opencontainers.image.ref.name": "example.com/team/web:v1"},
	}))[0]

	desc, data, err := s.Manifest("example.com/team/web:v1")
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != digestOf(data) || desc.Size != int64(len(data)) || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("descriptor %+v does not describe the %d bytes (digest %s)", desc, len(data), digestOf(data))
	}
	m, err := v1.ParseManifest(bytes.NewReader(data))
	if err != nil || m.Config.Digest.String() != img.ID || len(m.Layers) != 2 {
		t.Fatalf("manifest %s: %v", data, err)
	}

	byDigest, data2, err := s.ManifestByDigest(desc.Digest.String())
	if err != nil || byDigest.Digest != desc.Digest || !bytes.Equal(data, data2) {
		t.Errorf("ManifestByDigest = %+v, %v", byDigest, err)
	}

	for _, tc := range []struct {
		name string
		get  func() error
		want error
	}{
		{"unknown tag", func() error { _, _, err := s.Manifest("example.com/team/web:v2"); return err }, ErrNotFound},
		{"bad reference", func() error { _, _, err := s.Manifest("Web"); return err }, ErrInvalid},
		// An image ID, or a prefix of one, is not a tag.
		{"image ID", func() error { _, _, err := s.Manifest(img.ID); return err }, ErrNotFound},
		{"ID prefix", func() error { _, _, err := s.Manifest(strings.TrimPrefix(img.ID, "sha256:")[:12]); return err }, ErrNotFound},
		// Blobs of the store that are not manifests.
		{"config digest", func() error { _, _, err := s.ManifestByDigest(img.ID); return err }, ErrNotFound},
		{"layer digest", func() error { _, _, err := s.ManifestByDigest(m.Layers[0].Digest.String()); return err }, ErrNotFound},
		{"bad digest", func() error { _, _, err := s.ManifestByDigest("sha256:../../index.json"); return err }, ErrInvalid},
	} {
		if err := tc.get(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestOpenBlob(t *testing.T) {
	requiresRoot(t)
	s := newStore(t)
	layer := mkTar(t, file("a", "hello"))
	img := mustImport(t, s, layer, "web", nil)
	_, mdata, err := s.Manifest("web")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := v1.ParseManifest(bytes.NewReader(mdata))

	for _, d := range []v1.Hash{digestOf(mdata), m.Config.Digest, m.Layers[0].Digest} {
		f, size, err := s.OpenBlob(d.String())
		if err != nil {
			t.Fatalf("OpenBlob(%s): %v", d, err)
		}
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil || digestOf(b) != d || int64(len(b)) != size {
			t.Errorf("OpenBlob(%s): %d bytes (size %d) with digest %s, %v", d, len(b), size, digestOf(b), err)
		}
	}

	// A well-formed digest of a file in blobs/ that no image references:
	// what a crash or a Load in progress leaves there.
	stray := []byte("stray")
	if err := os.WriteFile(filepath.Join(s.blobDir(), digestOf(stray).Hex), stray, 0o600); err != nil {
		t.Fatal(err)
	}
	hex := strings.TrimPrefix(img.ID, "sha256:")
	for _, tc := range []struct {
		digest string
		want   error
	}{
		{digestOf(stray).String(), ErrNotFound},
		{"sha256:" + strings.Repeat("0", 64), ErrNotFound},
		{"sha256:../../index.json", ErrInvalid},
		{"sha256:../" + hex[3:], ErrInvalid},
		{"sha256:" + strings.ToUpper(hex), ErrInvalid},
		{"sha256:" + hex + "/", ErrInvalid},
		{"sha256:" + hex[:63], ErrInvalid},
		{"sha512:" + hex + hex, ErrInvalid},
		{hex, ErrInvalid},
		{"", ErrInvalid},
	} {
		f, _, err := s.OpenBlob(tc.digest)
		if err == nil {
			f.Close()
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("OpenBlob(%q) = %v, want %v", tc.digest, err, tc.want)
		}
	}

	// An open blob stays readable after its image is removed.
	f, size, err := s.OpenBlob(m.Layers[0].Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.Remove("web", false); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(f); err != nil || int64(len(b)) != size {
		t.Errorf("read after Remove: %d bytes, %v", len(b), err)
	}
	if _, _, err := s.OpenBlob(m.Layers[0].Digest.String()); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenBlob after Remove = %v, want ErrNotFound", err)
	}
}
