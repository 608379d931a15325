package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/manager/ca"
)

func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestServeImage walks an image the way a registry client pulls it: the
// version check, the manifest by tag, then config and layers by digest,
// each checked against the digest that named it.
func TestServeImage(t *testing.T) {
	s, img := webStore(t)
	p := newPKI(t)
	base := startRegistry(t, s, p)
	c := p.client(p.worker)

	v2 := do(t, c, http.MethodGet, base+"/v2/")
	if v2.status != http.StatusOK || v2.header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/ = %d %v", v2.status, v2.header)
	}

	wantDesc, wantData, err := s.Manifest("shoal-e2e/web:latest")
	if err != nil {
		t.Fatal(err)
	}
	// Every spelling of the store's tags, as a client derives the path
	// from "host:port/<name>:<tag>".
	for _, path := range []string{
		"/v2/shoal-e2e/web/manifests/latest",
		"/v2/nginx/manifests/1",
		"/v2/library/nginx/manifests/1",
		"/v2/docker.io/library/nginx/manifests/1",
		"/v2/shoal-e2e/web/manifests/" + wantDesc.Digest.String(),
		// By digest, the repository does not scope: every node may
		// read every image.
		"/v2/other/manifests/" + wantDesc.Digest.String(),
	} {
		r := do(t, c, http.MethodGet, base+path)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		if !bytes.Equal(r.body, wantData) {
			t.Errorf("GET %s: body differs from the stored manifest", path)
		}
		if got := r.header.Get("Docker-Content-Digest"); got != sha256Of(r.body) || got != wantDesc.Digest.String() {
			t.Errorf("GET %s: Docker-Content-Digest = %s, body is %s, store says %s", path, got, sha256Of(r.body), wantDesc.Digest)
		}
		if got := r.header.Get("Content-Type"); got != string(wantDesc.MediaType) || got == "" {
			t.Errorf("GET %s: Content-Type = %q, want %q", path, got, wantDesc.MediaType)
		}
	}

	head := do(t, c, http.MethodHead, base+"/v2/shoal-e2e/web/manifests/latest")
	if head.status != http.StatusOK || len(head.body) != 0 ||
		head.header.Get("Content-Length") != strconv.Itoa(len(wantData)) ||
		head.header.Get("Docker-Content-Digest") != wantDesc.Digest.String() ||
		head.header.Get("Content-Type") != string(wantDesc.MediaType) {
		t.Errorf("HEAD manifest = %d %v, %d body bytes", head.status, head.header, len(head.body))
	}

	m, err := v1.ParseManifest(bytes.NewReader(wantData))
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest.String() != img.ID {
		t.Errorf("manifest config %s, image ID %s", m.Config.Digest, img.ID)
	}
	if len(m.Layers) != 2 {
		t.Fatalf("manifest has %d layers, want 2", len(m.Layers))
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		path := "/v2/shoal-e2e/web/blobs/" + d.Digest.String()
		r := do(t, c, http.MethodGet, base+path)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		if got := sha256Of(r.body); got != d.Digest.String() || int64(len(r.body)) != d.Size {
			t.Errorf("GET %s: got %d bytes with digest %s, want %d bytes", path, len(r.body), got, d.Size)
		}
		if got := r.header.Get("Docker-Content-Digest"); got != d.Digest.String() {
			t.Errorf("GET %s: Docker-Content-Digest = %s", path, got)
		}
		h := do(t, c, http.MethodHead, base+path)
		if h.status != http.StatusOK || h.header.Get("Content-Length") != strconv.FormatInt(d.Size, 10) || len(h.body) != 0 {
			t.Errorf("HEAD %s = %d, Content-Length %s", path, h.status, h.header.Get("Content-Length"))
		}
	}

	// A resumed download asks for the rest of a layer.
	layer := m.Layers[0]
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/shoal-e2e/web/blobs/"+layer.Digest.String(), nil)
	req.Header.Set("Range", "bytes=10-")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || resp.ContentLength != layer.Size-10 {
		t.Errorf("ranged GET = %d, %d bytes; want 206, %d", resp.StatusCode, resp.ContentLength, layer.Size-10)
	}
}

func TestUnknown(t *testing.T) {
	s, _ := webStore(t)
	p := newPKI(t)
	base := startRegistry(t, s, p)
	c := p.client(p.worker)
	_, data, err := s.Manifest("shoal-e2e/web")
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	missing := "sha256:" + strings.Repeat("0", 64)

	for _, tc := range []struct {
		name, path string
		status     int
		code, msg  string
	}{
		{"unknown tag", "/v2/shoal-e2e/web/manifests/v9", 404, codeManifestUnknown, "shoal-e2e/web:v9"},
		{"unknown repository", "/v2/nope/manifests/latest", 404, codeManifestUnknown, "nope:latest"},
		{"unknown manifest digest", "/v2/shoal-e2e/web/manifests/" + missing, 404, codeManifestUnknown, missing},
		// The store holds these blobs, but they are not manifests.
		{"config digest as manifest", "/v2/shoal-e2e/web/manifests/" + m.Config.Digest.String(), 404, codeManifestUnknown, m.Config.Digest.String()},
		{"layer digest as manifest", "/v2/shoal-e2e/web/manifests/" + m.Layers[0].Digest.String(), 404, codeManifestUnknown, ""},
		{"unknown blob", "/v2/shoal-e2e/web/blobs/" + missing, 404, codeBlobUnknown, missing},
		{"tags list", "/v2/shoal-e2e/web/tags/list", 404, codeUnsupported, ""},
		{"catalog", "/v2/_catalog", 404, codeUnsupported, ""},
		{"not v2", "/v1/_ping", 404, codeUnsupported, ""},
		{"bad tag", "/v2/shoal-e2e/web/manifests/-x", 400, codeTagInvalid, ""},
		{"bad name", "/v2/Shoal/web/manifests/latest", 400, codeNameInvalid, ""},
		{"name too long", "/v2/" + strings.Repeat("a", 256) + "/manifests/latest", 400, codeNameInvalid, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c, http.MethodGet, base+tc.path)
			if r.status != tc.status {
				t.Fatalf("GET %s = %d %s, want %d", tc.path, r.status, r.body, tc.status)
			}
			e := apiErrorOf(t, r)
			if e.Code != tc.code || !strings.Contains(e.Message, tc.msg) {
				t.Errorf("error = %+v, want code %s naming %q", e, tc.code, tc.msg)
			}
			if h := do(t, c, http.MethodHead, base+tc.path); h.status != tc.status || len(h.body) != 0 {
				t.Errorf("HEAD %s = %d with %d body bytes, want %d and none", tc.path, h.status, len(h.body), tc.status)
			}
		})
	}
}

// TestWritesRefused: pushes go through `shoal image load`, never the
// registry.
func TestWritesRefused(t *testing.T) {
	s, _ := webStore(t)
	p := newPKI(t)
	base := startRegistry(t, s, p)
	c := p.client(p.worker)
	before, _ := s.List()
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/v2/shoal-e2e/web/blobs/uploads/"},
		{http.MethodPatch, "/v2/shoal-e2e/web/blobs/uploads/123"},
		{http.MethodPut, "/v2/shoal-e2e/web/blobs/uploads/123?digest=sha256:" + strings.Repeat("a", 64)},
		{http.MethodPut, "/v2/shoal-e2e/web/manifests/latest"},
		{http.MethodDelete, "/v2/shoal-e2e/web/manifests/latest"},
		{http.MethodDelete, "/v2/shoal-e2e/web/blobs/sha256:" + strings.Repeat("a", 64)},
		{http.MethodPost, "/v2/"},
	} {
		r := do(t, c, tc.method, base+tc.path)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s = %d (Allow %q), want 405 (GET, HEAD)", tc.method, tc.path, r.status, r.header.Get("Allow"))
			continue
		}
		if e := apiErrorOf(t, r); e.Code != codeUnsupported || !strings.Contains(e.Message, "shoal image load") {
			t.Errorf("%s %s: error %+v", tc.method, tc.path, e)
		}
	}
	after, _ := s.List()
	if len(after) != len(before) {
		t.Errorf("store changed: %d images, had %d", len(after), len(before))
	}
}

// TestPathTricks: blob and manifest digests reach the store's blob
// directory only as sha256 hex; nothing else gets past the handler, and
// nothing outside the referenced blobs (index.json, a stray file) is ever
// served.
func TestPathTricks(t *testing.T) {
	s, _ := webStore(t)
	p := newPKI(t)
	base := startRegistry(t, s, p)
	c := p.client(p.worker)
	_, data, _ := s.Manifest("shoal-e2e/web")
	m, _ := v1.ParseManifest(bytes.NewReader(data))
	good := m.Layers[0].Digest.Hex

	for _, path := range []string{
		"/v2/web/blobs/sha256:../../index.json",
		"/v2/web/blobs/sha256:..%2f..%2findex.json",
		"/v2/web/blobs/..%2f..%2f..%2findex.json",
		"/v2/web/blobs/sha256:" + good + "%2f..%2f..%2f..%2findex.json",
		"/v2/web/blobs/sha256:" + good + "/../../../index.json",
		"/v2/web/blobs/sha256:" + strings.ToUpper(good),
		"/v2/web/blobs/sha256:" + good[:63],
		"/v2/web/blobs/sha256:" + good + "0",
		"/v2/web/blobs/sha512:" + good + good,
		"/v2/web/blobs/sha256:" + good + "%00",
		"/v2/web/blobs/" + good,
		"/v2/web/blobs/sha256%3a" + good + "%2f..",
		"/v2/../../../etc/passwd",
		"/v2/web/blobs/%2e%2e",
		"/v2/..%2f..%2findex.json/blobs/sha256:" + good,
		"/v2/web/manifests/sha256:..%2f..%2findex.json",
		"/v2/web/manifests/..%2findex.json",
		"/v2/web/manifests/%2e%2e",
	} {
		r := do(t, c, http.MethodGet, base+path)
		if r.status != http.StatusBadRequest && r.status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 400 or 404", path, r.status)
			continue
		}
		// index.json and manifests have a schemaVersion; /etc/passwd a root.
		if bytes.Contains(r.body, []byte("schemaVersion")) || bytes.Contains(r.body, []byte("root:x")) {
			t.Errorf("GET %s leaked file content: %q", path, r.body)
		}
		apiErrorOf(t, r)
	}
}

// TestClientCertificateRequired: the registry admits nodes of the swarm
// only.
func TestClientCertificateRequired(t *testing.T) {
	s, _ := webStore(t)
	p := newPKI(t)
	base := startRegistry(t, s, p)

	other := newPKI(t) // another swarm's CA and nodes
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   string
	}{
		{"no certificate", p.client(nil), "requires a certificate"},
		{"another swarm's node", &http.Client{Transport: &http.Transport{
			TLSClientConfig: ca.ClientTLS(p.ca.Pool(), other.worker, "")}}, "another swarm's CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.client.Get(base + "/v2/")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET /v2/ = %d, want the handshake refused", resp.StatusCode)
			}
			if got := ca.Explain(err); got == nil || !strings.Contains(got.Error(), tc.want) {
				t.Errorf("error %v (explained: %v), want it to say %q", err, got, tc.want)
			}
		})
	}
	if r := do(t, p.client(p.worker), http.MethodGet, base+"/v2/"); r.status != http.StatusOK {
		t.Errorf("with a node certificate: GET /v2/ = %d", r.status)
	}
}

func TestServeRefusesInsecureConfig(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"nil", nil},
		{"anonymous allowed", ca.ServerTLS(p.ca.Pool(), p.manager, ca.Policy{AllowAnonymous: true})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			err = Serve(context.Background(), ln, New(fakeStore{}, nil), tc.cfg, nil)
			if !errors.Is(err, ErrInsecure) {
				t.Fatalf("Serve = %v, want ErrInsecure", err)
			}
			if _, err := ln.Accept(); err == nil {
				t.Error("listener still open")
			}
		})
	}
}

// TestStoreFailure: a store that fails (a disk error) is a 500 with the
// registry error body, and its detail stays in the log.
func TestStoreFailure(t *testing.T) {
	h := New(fakeStore{err: fmt.Errorf("blob: %w", errDisk)}, testLogger(t))
	for _, path := range []string{
		"/v2/web/manifests/latest",
		"/v2/web/manifests/sha256:" + strings.Repeat("a", 64),
		"/v2/web/blobs/sha256:" + strings.Repeat("a", 64),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		if r.status != http.StatusInternalServerError {
			t.Fatalf("GET %s = %d, want 500", path, r.status)
		}
		if e := apiErrorOf(t, r); e.Code != codeUnknown || strings.Contains(e.Message, errDisk.Error()) {
			t.Errorf("GET %s: error %+v", path, e)
		}
	}
}

// TestServeStops: Serve returns nil once its context is done.
func TestServeStops(t *testing.T) {
	p := newPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, New(fakeStore{}, nil), p.serverTLS(), nil) }()
	c := p.client(p.worker)
	if r := do(t, c, http.MethodGet, "https://"+ln.Addr().String()+"/v2/"); r.status != http.StatusOK {
		t.Fatalf("GET /v2/ = %d", r.status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v, want nil after cancel", err)
	}
	c.CloseIdleConnections()
	if _, err := c.Get("https://" + ln.Addr().String() + "/v2/"); err == nil {
		t.Error("server still answers after Serve returned")
	}
}
