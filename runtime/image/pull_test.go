package image_test

// Pull is tested from outside the package: its tests serve a store with
// the registry package, which imports this one.

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/registry"
	"github.com/shoal-dev/shoal/runtime/image"
)

var pullTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// layerTar builds an uncompressed layer tar of regular files, in order.
func layerTar(t testing.TB, files ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f[0], Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f[1])), ModTime: pullTime}
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

// ggcrImage builds a linux/GOARCH image of the layer tars (gzipped by
// go-containerregistry) that runs /bin/web.
func ggcrImage(t testing.TB, arch string, layers ...[]byte) v1.Image {
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
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: pullTime}
	cf.Config.Cmd = []string{"/bin/web"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// newStore opens an empty store and returns it with its root.
func newStore(t testing.TB) (*image.Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "images")
	s, err := image.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

// webStore is a store holding a two-layer image tagged
// shoal-e2e/web:latest and nginx:1, as a manager's store would.
func webStore(t testing.TB, layers ...[]byte) (*image.Store, *image.Image) {
	t.Helper()
	testutil.RequiresRoot(t) // unpacking layers sets owners
	if layers == nil {
		layers = [][]byte{
			layerTar(t, [2]string{"etc/hostname", "web"}, [2]string{"bin/web", "#!/bin/sh\necho hi\n"}),
			layerTar(t, [2]string{"srv/index.html", "<h1>hello</h1>"}),
		}
	}
	img := ggcrImage(t, runtime.GOARCH, layers...)
	refs := map[name.Reference]v1.Image{}
	for _, tag := range []string{"shoal-e2e/web:latest", "nginx:1"} {
		r, err := name.ParseReference(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[r] = img
	}
	var buf bytes.Buffer
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	s, _ := newStore(t)
	imgs, err := s.Load(&buf)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s, imgs[0]
}

// pki is a throwaway swarm CA with a manager (the registry) and a worker
// (the pulling agent).
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
	key, _, err := ca.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.Issue(key.Public(), nodeID, role, time.Now(), time.Hour)
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

// transport is an agent's: mutual TLS with id's certificate (nil: none),
// any manager accepted.
func (p *pki) transport(id *ca.Identity) http.RoundTripper {
	return &http.Transport{TLSClientConfig: ca.ClientTLS(p.ca.Pool(), id, "")}
}

// requestLog records the paths a server was asked for.
type requestLog struct {
	mu    sync.Mutex
	paths []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.paths = append(l.paths, r.URL.Path)
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.paths)
}

func (l *requestLog) since(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.paths[n:])
}

// nodeRegistry serves s as a manager does: the registry handler behind
// TLS that requires and verifies client certificates of the swarm. It
// returns the server's host:port and its request log. wrap, if not nil,
// sits between the server and the registry.
func nodeRegistry(t testing.TB, s *image.Store, p *pki, wrap func(http.Handler) http.Handler) (string, *requestLog) {
	t.Helper()
	reqs := &requestLog{}
	h := registry.New(s, nil)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(reqs.wrap(h))
	srv.TLS = ca.ServerTLS(p.ca.Pool(), p.manager, ca.Policy{})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), reqs
}

// publicRegistry is go-containerregistry's in-memory registry over plain
// HTTP, as an external test registry; it returns host:port.
func publicRegistry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

func mustPull(t testing.TB, s *image.Store, ref string, opts image.PullOptions) *image.Image {
	t.Helper()
	img, err := s.Pull(context.Background(), ref, opts)
	if err != nil {
		t.Fatalf("Pull %s: %v", ref, err)
	}
	return img
}

func readLayerFile(t *testing.T, dir, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, p))
	if err != nil {
		t.Fatalf("layer file %s: %v", p, err)
	}
	return string(b)
}

// assertEmpty checks that a failed pull left no image and nothing in the
// store's dirs.
func assertEmpty(t *testing.T, s *image.Store, root string) {
	t.Helper()
	imgs, err := s.List()
	if err != nil || len(imgs) != 0 {
		t.Errorf("List = %d images, %v; want none", len(imgs), err)
	}
	for _, d := range []string{"blobs/sha256", "layers", "tmp"} {
		entries, err := os.ReadDir(filepath.Join(root, d))
		if err != nil || len(entries) != 0 {
			t.Errorf("%s: %d entries, %v; want none", d, len(entries), err)
		}
	}
}

func TestPullFromNodeRegistry(t *testing.T) {
	src, want := webStore(t)
	p := newPKI(t)
	addr, reqs := nodeRegistry(t, src, p, nil)
	dst, _ := newStore(t)
	opts := image.PullOptions{Registry: addr, Transport: p.transport(p.worker)}

	img := mustPull(t, dst, "shoal-e2e/web:latest", opts)
	if img.ID != want.ID || !slices.Equal(img.DiffIDs, want.DiffIDs) {
		t.Fatalf("pulled %s %v, want %s %v", img.ID, img.DiffIDs, want.ID, want.DiffIDs)
	}
	if !slices.Equal(img.RepoTags, []string{"shoal-e2e/web:latest"}) {
		t.Errorf("RepoTags = %v, want the pulled ref only", img.RepoTags)
	}
	if !slices.Equal(img.Config.Cmd, []string{"/bin/web"}) || !img.Created.Equal(pullTime) {
		t.Errorf("Config.Cmd = %v, Created = %v", img.Config.Cmd, img.Created)
	}
	got, err := dst.Get("shoal-e2e/web:latest")
	if err != nil || got.ID != want.ID {
		t.Fatalf("Get after pull = %v, %v", got, err)
	}
	// The manifest is kept as the manager stores it, so both nodes name
	// the image by the same digest.
	srcDesc, _, err := src.Manifest("shoal-e2e/web")
	if err != nil {
		t.Fatal(err)
	}
	dstDesc, _, err := dst.Manifest("shoal-e2e/web")
	if err != nil || dstDesc.Digest != srcDesc.Digest {
		t.Errorf("manifest digest after pull = %v (%v), manager's %v", dstDesc.Digest, err, srcDesc.Digest)
	}
	dirs, err := dst.LayerDirs(got)
	if err != nil || len(dirs) != 2 {
		t.Fatalf("LayerDirs = %v, %v", dirs, err)
	}
	if s := readLayerFile(t, dirs[0], "etc/hostname"); s != "web" {
		t.Errorf("etc/hostname = %q", s)
	}
	if s := readLayerFile(t, dirs[1], "srv/index.html"); s != "<h1>hello</h1>" {
		t.Errorf("srv/index.html = %q", s)
	}

	n := reqs.count()
	if n == 0 {
		t.Fatal("the registry saw no request")
	}
	again := mustPull(t, dst, "shoal-e2e/web:latest", opts)
	if again.ID != want.ID {
		t.Errorf("second pull = %s, want %s", again.ID, want.ID)
	}
	if r := reqs.since(n); len(r) != 0 {
		t.Errorf("second pull of a present image asked the registry for %v", r)
	}

	// Another tag of an image present costs a manifest, not the layers.
	n = reqs.count()
	other := mustPull(t, dst, "nginx:1", opts)
	if other.ID != want.ID || !slices.Equal(other.RepoTags, []string{"nginx:1", "shoal-e2e/web:latest"}) {
		t.Errorf("pull nginx:1 = %s %v", other.ID, other.RepoTags)
	}
	for _, path := range reqs.since(n) {
		if strings.Contains(path, "/blobs/") {
			t.Errorf("pull of a known image fetched %s", path)
		}
	}
}

func TestPullByDigest(t *testing.T) {
	src, want := webStore(t)
	p := newPKI(t)
	addr, reqs := nodeRegistry(t, src, p, nil)
	desc, _, err := src.Manifest("shoal-e2e/web")
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := newStore(t)
	opts := image.PullOptions{Registry: addr, Transport: p.transport(p.worker)}

	ref := "shoal-e2e/web@" + desc.Digest.String()
	img := mustPull(t, dst, ref, opts)
	if img.ID != want.ID || len(img.RepoTags) != 0 {
		t.Fatalf("pull by digest = %s %v, want %s untagged", img.ID, img.RepoTags, want.ID)
	}
	if _, err := dst.LayerDirs(img); err != nil {
		t.Fatal(err)
	}
	n := reqs.count()
	if again := mustPull(t, dst, ref, opts); again.ID != want.ID {
		t.Errorf("second pull by digest = %s", again.ID)
	}
	if r := reqs.since(n); len(r) != 0 {
		t.Errorf("second pull by digest asked the registry for %v", r)
	}

	// A node registry serves any digest under any name, so a name with a
	// registry port, which no repository path can spell, pulls by digest.
	other, _ := newStore(t)
	if img := mustPull(t, other, "127.0.0.1:5000/web@"+desc.Digest.String(), opts); img.ID != want.ID {
		t.Errorf("pull by digest of a name with a port = %s, want %s", img.ID, want.ID)
	}

	// A digest the registry does not have.
	missing := "shoal-e2e/web@sha256:" + strings.Repeat("0", 64)
	_, err = dst.Pull(context.Background(), missing, opts)
	wantMsg := "pull " + missing + " from " + addr + ": manifest unknown: no image shoal-e2e/web@sha256:" + strings.Repeat("0", 64) + " on this node"
	if err == nil || err.Error() != wantMsg || !errors.Is(err, image.ErrNotFound) {
		t.Errorf("pull of a missing digest: %v\nwant %s (ErrNotFound)", err, wantMsg)
	}
}

func TestPullUnknownTag(t *testing.T) {
	src, _ := webStore(t)
	p := newPKI(t)
	addr, _ := nodeRegistry(t, src, p, nil)
	dst, root := newStore(t)

	_, err := dst.Pull(context.Background(), "shoal-e2e/web:v9", image.PullOptions{Registry: addr, Transport: p.transport(p.worker)})
	want := "pull shoal-e2e/web:v9 from " + addr + ": manifest unknown: no image shoal-e2e/web:v9 on this node"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
	if !errors.Is(err, image.ErrNotFound) {
		t.Errorf("err does not match ErrNotFound")
	}
	assertEmpty(t, dst, root)
}

// TestPullCancelled cancels a pull while a layer downloads: Load sees the
// download fail and the store is left as it was.
func TestPullCancelled(t *testing.T) {
	src, _ := webStore(t)
	p := newPKI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, _ := nodeRegistry(t, src, p, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/blobs/") {
				cancel()
				<-r.Context().Done() // the client hangs up
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	dst, root := newStore(t)
	_, err := dst.Pull(ctx, "shoal-e2e/web:latest", image.PullOptions{Registry: addr, Transport: p.transport(p.worker)})
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "pull shoal-e2e/web:latest from "+addr+": ") {
		t.Fatalf("err = %v, want context.Canceled naming the ref and registry", err)
	}
	assertEmpty(t, dst, root)
}

func TestPullInvalidArguments(t *testing.T) {
	s, root := newStore(t)
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		ref  string
		opts image.PullOptions
		want string
	}{
		{"Web:1", image.PullOptions{},
			"pull Web:1: invalid reference format: Web:1: repository name must be lowercase letters, digits and separators"},
		{"web@sha256:abc", image.PullOptions{},
			`pull web@sha256:abc: invalid digest "sha256:abc": want sha256:<64 lower-case hex digits>`},
		{"web:1", image.PullOptions{Registry: "https://10.0.0.1:2379"},
			`pull web:1 from https://10.0.0.1:2379: invalid registry "https://10.0.0.1:2379": want host:port`},
		{"127.0.0.1:5000/web:1", image.PullOptions{Registry: "10.0.0.1:2379"},
			"pull 127.0.0.1:5000/web:1 from 10.0.0.1:2379: a node registry cannot serve a name with a registry port by tag (a repository path cannot spell the port): pull it by digest"},
		{"web:1@" + digest, image.PullOptions{Registry: "10.0.0.1:2379/v2"},
			`pull web:1@` + digest + ` from 10.0.0.1:2379/v2: invalid registry "10.0.0.1:2379/v2": want host:port`},
	} {
		_, err := s.Pull(context.Background(), tc.ref, tc.opts)
		if err == nil || err.Error() != tc.want || !errors.Is(err, image.ErrInvalid) {
			t.Errorf("Pull %q: %v\nwant %s (ErrInvalid)", tc.ref, err, tc.want)
		}
	}
	assertEmpty(t, s, root)
}

func TestPullRefusedTLS(t *testing.T) {
	src, _ := webStore(t)
	p := newPKI(t)
	addr, _ := nodeRegistry(t, src, p, nil)
	for _, tc := range []struct {
		name      string
		transport http.RoundTripper
		want      string
	}{
		{"client without certificate", p.transport(nil),
			"the registry refused the TLS connection: remote error: tls: certificate required"},
		{"registry not trusted", nil,
			"cannot verify the registry's certificate: x509: certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, root := newStore(t)
			_, err := dst.Pull(context.Background(), "shoal-e2e/web:latest", image.PullOptions{Registry: addr, Transport: tc.transport})
			want := "pull shoal-e2e/web:latest from " + addr + ": " + tc.want
			if err == nil || err.Error() != want {
				t.Fatalf("err = %v\nwant  %s", err, want)
			}
			// The agent can still classify the refusal with the CA's words.
			if tc.transport != nil && !errors.Is(ca.Explain(err), ca.ErrRefused) {
				t.Errorf("ca.Explain(err) = %v, want ErrRefused", ca.Explain(err))
			}
			assertEmpty(t, dst, root)
		})
	}
}

// TestPullPublicRegistry is the `image: host:port/repo:tag` case: an image
// pushed to a plain-HTTP test registry by another client, pulled from the
// registry the reference names.
func TestPullPublicRegistry(t *testing.T) {
	testutil.RequiresRoot(t)
	host := publicRegistry(t)
	img := ggcrImage(t, runtime.GOARCH, layerTar(t, [2]string{"etc/hostname", "public"}))
	ref := host + "/shoal-e2e/web:v1"
	push(t, ref, img)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("insecure", func(t *testing.T) {
		dst, _ := newStore(t)
		got := mustPull(t, dst, ref, image.PullOptions{Insecure: true})
		if got.ID != cfg.String() {
			t.Errorf("pulled %s, want %s", got.ID, cfg)
		}
		byRef, err := dst.Get(ref)
		if err != nil || byRef.ID != cfg.String() || !slices.Equal(byRef.RepoTags, []string{ref}) {
			t.Fatalf("Get(%s) = %v, %v", ref, byRef, err)
		}
		dirs, err := dst.LayerDirs(byRef)
		if err != nil || len(dirs) != 1 {
			t.Fatalf("LayerDirs = %v, %v", dirs, err)
		}
		if s := readLayerFile(t, dirs[0], "etc/hostname"); s != "public" {
			t.Errorf("etc/hostname = %q", s)
		}
	})

	t.Run("index picks this platform", func(t *testing.T) {
		otherArch := "s390x"
		if runtime.GOARCH == otherArch {
			otherArch = "amd64"
		}
		other := ggcrImage(t, otherArch, layerTar(t, [2]string{"etc/hostname", otherArch}))
		idx := mutate.AppendManifests(empty.Index,
			mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
			mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
		)
		multi := host + "/shoal-e2e/multi:v1"
		r, err := name.ParseReference(multi)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(r, idx); err != nil {
			t.Fatal(err)
		}
		dst, _ := newStore(t)
		if got := mustPull(t, dst, multi, image.PullOptions{Insecure: true}); got.ID != cfg.String() {
			t.Errorf("pulled %s from the index, want this platform's %s", got.ID, cfg)
		}
	})

	t.Run("plain HTTP refused unless insecure", func(t *testing.T) {
		dst, root := newStore(t)
		_, err := dst.Pull(context.Background(), ref, image.PullOptions{})
		want := "pull " + ref + " from " + host + ": http: server gave HTTP response to HTTPS client (plain HTTP is refused unless the pull is insecure)"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v\nwant  %s", err, want)
		}
		assertEmpty(t, dst, root)
	})
}

// TestPullRejectsBadContent: what a registry serves is held to what Load
// holds an archive to, and a refused pull leaves nothing behind.
func TestPullRejectsBadContent(t *testing.T) {
	t.Run("corrupt layer", func(t *testing.T) {
		src, _ := webStore(t)
		_, mdata, err := src.Manifest("shoal-e2e/web")
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(mdata))
		if err != nil {
			t.Fatal(err)
		}
		bad := m.Layers[1].Digest.String()
		p := newPKI(t)
		addr, _ := nodeRegistry(t, src, p, func(h http.Handler) http.Handler { return corruptBlob(h, bad) })
		dst, root := newStore(t)
		_, err = dst.Pull(context.Background(), "shoal-e2e/web:latest", image.PullOptions{Registry: addr, Transport: p.transport(p.worker)})
		if err == nil || !strings.HasPrefix(err.Error(), "pull shoal-e2e/web:latest from "+addr+": layer "+bad+": ") {
			t.Fatalf("err = %v, want a digest mismatch of layer %s", err, bad)
		}
		assertEmpty(t, dst, root)
	})

	t.Run("layer escaping its root", func(t *testing.T) {
		testutil.RequiresRoot(t)
		host := publicRegistry(t)
		evil := ggcrImage(t, runtime.GOARCH, layerTar(t, [2]string{"../../../../escaped", "gotcha"}))
		ref := host + "/evil/web:v1"
		push(t, ref, evil)
		dst, root := newStore(t)
		_, err := dst.Pull(context.Background(), ref, image.PullOptions{Insecure: true})
		if !errors.Is(err, image.ErrInvalid) || !strings.HasPrefix(err.Error(), "pull "+ref+" from "+host+": ") {
			t.Fatalf("err = %v, want ErrInvalid naming the ref and registry", err)
		}
		assertEmpty(t, dst, root)
		filepath.WalkDir(filepath.Dir(filepath.Dir(root)), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == "escaped" {
				t.Errorf("layer entry escaped to %s", p)
			}
			return nil
		})
	})
}

// corruptBlob flips the last byte of the blob digest when the registry
// sends it.
func corruptBlob(h http.Handler, digest string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/blobs/"+digest) || r.Method != http.MethodGet {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if len(body) > 0 && rec.Code == http.StatusOK {
			body[len(body)-1] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

// BenchmarkPull pulls a ~20 MB image (two layers of incompressible data)
// from a node registry over loopback mutual TLS into a fresh store each
// time: download, spool, verify, store and unpack. MB/s is of blob bytes.
func BenchmarkPull(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(n int) string {
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		return string(buf)
	}
	src, _ := webStore(b,
		layerTar(b, [2]string{"data/one", noise(10 << 20)}),
		layerTar(b, [2]string{"data/two", noise(10 << 20)}),
	)
	p := newPKI(b)
	addr, _ := nodeRegistry(b, src, p, nil)
	opts := image.PullOptions{Registry: addr, Transport: p.transport(p.worker)}

	_, mdata, err := src.Manifest("shoal-e2e/web")
	if err != nil {
		b.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(mdata))
	if err != nil {
		b.Fatal(err)
	}
	total := int64(len(mdata)) + m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	b.SetBytes(total)
	dir := b.TempDir()
	for b.Loop() {
		b.StopTimer()
		root, err := os.MkdirTemp(dir, "images-")
		if err != nil {
			b.Fatal(err)
		}
		dst, err := image.Open(root)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := dst.Pull(context.Background(), "shoal-e2e/web:latest", opts); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.RemoveAll(root); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
