package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/runtime/image"
)

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// testLogger logs at debug level to the test's output; benchmarks log
// nothing, as their output is for the figures.
func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// tarOf builds an uncompressed layer tar of regular files, in order.
func tarOf(t testing.TB, files ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f[0], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f[1])), ModTime: testTime}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// saveArchive makes a `docker save` archive of an image with the given
// layer tars (gzip-compressed by go-containerregistry on the way), tagged
// with every tag.
func saveArchive(t testing.TB, layers [][]byte, tags ...string) []byte {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(l)), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: testTime}
	cf.Config.Cmd = []string{"/bin/web", "--port", "80"}
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	refs := map[name.Reference]v1.Image{}
	for _, tag := range tags {
		ref, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	var buf bytes.Buffer
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newStore opens an empty image store in a temp dir.
func newStore(t testing.TB) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// webStore is a store holding one two-layer image tagged
// shoal-e2e/web:latest and nginx:1 (Docker Hub's library/nginx:1).
func webStore(t testing.TB) (*image.Store, *image.Image) {
	t.Helper()
	testutil.RequiresRoot(t) // unpacking layers sets owners
	s := newStore(t)
	archive := saveArchive(t, [][]byte{
		tarOf(t, [2]string{"etc/hostname", "web"}, [2]string{"bin/web", "#!/bin/sh\necho hi\n"}),
		tarOf(t, [2]string{"srv/index.html", "<h1>hello</h1>"}),
	}, "shoal-e2e/web:latest", "nginx:1")
	imgs, err := s.Load(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s, imgs[0]
}

// pki is a throwaway swarm CA with a manager (the registry's server) and a
// worker (a pulling agent).
type pki struct {
	ca      *ca.CA
	manager *ca.Identity
	worker  *ca.Identity
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	c, err := ca.New("test-cluster", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &pki{ca: c, manager: issue(t, c, "manager1", ca.RoleManager), worker: issue(t, c, "worker1", ca.RoleWorker)}
}

func issue(t testing.TB, c *ca.CA, nodeID, role string) *ca.Identity {
	t.Helper()
	key, csr, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.SignCSR(csr, nodeID, role, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.X509KeyPair(certPEM, keyPEM, c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.NewIdentity(cert)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serverTLS is what a manager's registry listener uses.
func (p *pki) serverTLS() *tls.Config {
	return ca.ServerTLS(p.ca.Pool(), p.manager, ca.Policy{})
}

// client is an agent's HTTP client: mutual TLS with id's certificate (nil:
// none), any manager accepted.
func (p *pki) client(id *ca.Identity) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientTLS(p.ca.Pool(), id, "")}}
}

// startRegistry serves s with Serve on a loopback port of the kernel's
// choosing and returns its base URL; the server stops when the test ends.
func startRegistry(t testing.TB, s Store, p *pki) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, New(s, testLogger(t)), p.serverTLS(), testLogger(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

// response is what a test reads of an HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, c *http.Client, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// apiErrorOf decodes the registry JSON error body, failing the test if the
// body is not one.
func apiErrorOf(t testing.TB, r response) apiError {
	t.Helper()
	var body struct {
		Errors []apiError `json:"errors"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Errors) != 1 {
		t.Fatalf("body %q is not a registry error (%v)", r.body, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	return body.Errors[0]
}

// fakeStore is a Store whose answers a test sets.
type fakeStore struct {
	err error
}

func (f fakeStore) Manifest(string) (v1.Descriptor, []byte, error) {
	return v1.Descriptor{}, nil, f.err
}
func (f fakeStore) ManifestByDigest(string) (v1.Descriptor, []byte, error) {
	return v1.Descriptor{}, nil, f.err
}
func (f fakeStore) OpenBlob(string) (io.ReadSeekCloser, int64, error) { return nil, 0, f.err }

var errDisk = errors.New("input/output error")
