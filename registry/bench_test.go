package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/internal/testutil"
)

// BenchmarkServeImage fetches every blob of a ~20 MB image (two layers of
// incompressible data) over loopback mutual TLS, hashing as it reads the
// way a registry client verifies. It measures the serving side of a pull:
// MB/s is of blob bytes on the wire.
func BenchmarkServeImage(b *testing.B) {
	testutil.RequiresRoot(b) // unpacking layers sets owners
	s := newStore(b)
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(n int) string {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		return string(buf)
	}
	archive := saveArchive(b, [][]byte{
		tarOf(b, [2]string{"data/one", noise(10 << 20)}),
		tarOf(b, [2]string{"data/two", noise(10 << 20)}),
	}, "bench/web:latest")
	if _, err := s.Load(bytes.NewReader(archive)); err != nil {
		b.Fatal(err)
	}
	p := newPKI(b)
	base := startRegistry(b, s, p)
	c := p.client(p.worker)
	_, mdata, err := s.Manifest("bench/web")
	if err != nil {
		b.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(mdata))
	if err != nil {
		b.Fatal(err)
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	var total int64
	for _, d := range blobs {
		total += d.Size
	}
	b.SetBytes(total + int64(len(mdata)))
	b.ResetTimer()
	for b.Loop() {
		fetch(b, c, base+"/v2/bench/web/manifests/latest", "")
		for _, d := range blobs {
			fetch(b, c, base+"/v2/bench/web/blobs/"+d.Digest.String(), d.Digest.Hex)
		}
	}
}

func fetch(b *testing.B, c *http.Client, url, wantHex string) {
	b.Helper()
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		b.Fatal(err)
	}
	if wantHex != "" && hex.EncodeToString(h.Sum(nil)) != wantHex {
		b.Fatalf("GET %s: digest mismatch", url)
	}
}
