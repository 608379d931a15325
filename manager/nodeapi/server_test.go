package nodeapi

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/shoal-dev/shoal/agent/exec/exectest"
	"github.com/shoal-dev/shoal/internal/testutil"
	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	"github.com/shoal-dev/shoal/runtime"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// env is a real runtime (root only) with the helper image, served by a
// Server over an in-memory connection.
type env struct {
	*exectest.RuntimeEnv
	t   *testing.T
	srv *Server
	c   nodev1.NodeClient
}

func newEnv(t *testing.T) *env {
	t.Helper()
	re := exectest.NewRuntimeEnv(t)
	srv := New(re.R)
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	nodev1.RegisterNodeServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	// Cleanups run last-in first-out: the server stops before the
	// runtime env removes the containers.
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{RuntimeEnv: re, t: t, srv: srv, c: nodev1.NewNodeClient(conn)}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// importImage streams a tarball through ImportImage in small chunks, so
// that the server reassembles many messages.
func (e *env) importImage(ref string, changes []string, tarball []byte) (string, error) {
	stream, err := e.c.ImportImage(ctxT(e.t))
	if err != nil {
		return "", err
	}
	hdr := &nodev1.ImportImageHeader{Ref: ref, Changes: changes, Message: "from a test"}
	if err := stream.Send(&nodev1.ImportImageRequest{Msg: &nodev1.ImportImageRequest_Header{Header: hdr}}); err != nil && err != io.EOF {
		return "", err
	}
	for b := tarball; len(b) > 0; {
		n := min(len(b), 100_000)
		if err := stream.Send(&nodev1.ImportImageRequest{Msg: &nodev1.ImportImageRequest_Data{Data: b[:n]}}); err != nil {
			break // io.EOF: the server has answered; CloseAndRecv says what
		}
		b = b[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return "", err
	}
	return resp.GetId(), nil
}

func (e *env) helperTar() []byte {
	b, err := os.ReadFile(testutil.HelperRootfs(e.t, nil))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) images() []*nodev1.Image {
	e.t.Helper()
	resp, err := e.c.ListImages(ctxT(e.t), &nodev1.ListImagesRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.GetImages()
}

func (e *env) imageWithTag(tag string) *nodev1.Image {
	for _, img := range e.images() {
		if slices.Contains(img.GetRepoTags(), tag) {
			return img
		}
	}
	return nil
}

func (e *env) start(s runtime.Spec) runtime.Container {
	e.t.Helper()
	c := e.create(s)
	if err := e.R.Start(c.ID); err != nil {
		e.t.Fatalf("start %s: %v", s.Name, err)
	}
	return e.Container(c.ID)
}

func (e *env) create(s runtime.Spec) runtime.Container {
	e.t.Helper()
	if s.Image == "" {
		s.Image = exectest.HelperImage
	}
	c, err := e.R.Create(s)
	if err != nil {
		e.t.Fatalf("create %s: %v", s.Name, err)
	}
	return c
}

func (e *env) wait(ref string) {
	e.t.Helper()
	if _, err := e.R.Wait(ctxT(e.t), ref); err != nil {
		e.t.Fatalf("wait %s: %v", ref, err)
	}
}

// logs reads a container's log through the API.
func (e *env) logs(req *nodev1.ContainerLogsRequest) ([]*nodev1.LogEntry, error) {
	stream, err := e.c.ContainerLogs(ctxT(e.t), req)
	if err != nil {
		return nil, err
	}
	var out []*nodev1.LogEntry
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func (e *env) waitLog(ref, want string) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		es, err := e.logs(&nodev1.ContainerLogsRequest{Ref: ref, Tail: -1})
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range es {
			if strings.Contains(string(m.GetLine()), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the log of %s never showed %q", ref, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type execResult struct {
	stdout, stderr string
	code           int
	err            error
}

// exec runs one exec call; the stdin chunks are sent (then stdin_eof when
// eof), and a resize after the options when the call has a tty.
func (e *env) exec(o *nodev1.ExecOptions, stdin []string, eof bool) execResult {
	e.t.Helper()
	stream, err := e.c.Exec(ctxT(e.t))
	if err != nil {
		return execResult{err: err}
	}
	msgs := []*nodev1.ExecRequest{{Msg: &nodev1.ExecRequest_Options{Options: o}}}
	if o.GetTty() {
		msgs = append(msgs, &nodev1.ExecRequest{Msg: &nodev1.ExecRequest_Resize{Resize: &nodev1.Resize{Rows: 40, Cols: 100}}})
	}
	for _, s := range stdin {
		msgs = append(msgs, &nodev1.ExecRequest{Msg: &nodev1.ExecRequest_Stdin{Stdin: []byte(s)}})
	}
	if eof {
		msgs = append(msgs, &nodev1.ExecRequest{Msg: &nodev1.ExecRequest_StdinEof{StdinEof: true}})
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the server has answered; Recv says what
		}
	}
	var r execResult
	var out, errOut strings.Builder
	for {
		m, err := stream.Recv()
		if err != nil {
			r.err = err
			if err == io.EOF {
				r.err = errors.New("stream ended without an exit")
			}
			break
		}
		if ex := m.GetExit(); ex != nil {
			r.code = int(ex.GetCode())
			break
		}
		out.Write(m.GetStdout())
		errOut.Write(m.GetStderr())
	}
	r.stdout, r.stderr = out.String(), errOut.String()
	return r
}

// wantStatus checks that err is a gRPC status with code and exactly msg
// (or, when msg ends in "…", starting with it).
func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	got := st.Message()
	ok := got == msg
	if p, cut := strings.CutSuffix(msg, "…"); cut {
		ok = strings.HasPrefix(got, p)
	}
	if err == nil || st.Code() != code || !ok {
		t.Errorf("%s: %v, want %s %q", what, err, code, msg)
	}
}

func TestImportAppliesChanges(t *testing.T) {
	e := newEnv(t)
	before := len(e.images())
	id, err := e.importImage("imported:v1", []string{
		`CMD ["/bin/helper","sleep","inf"]`,
		`ENV GREETING="hello world" PATH=/bin`,
		`WORKDIR /tmp`,
		`EXPOSE 8080/udp`,
		`LABEL com.example.team=infra`,
		`USER app`,
		`STOPSIGNAL SIGINT`,
	}, e.helperTar())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "sha256:") {
		t.Errorf("id %q", id)
	}
	img := e.imageWithTag("imported:v1")
	if img == nil || img.GetId() != id || img.GetSize() == 0 || img.GetCreated() == nil ||
		img.GetLabels()["com.example.team"] != "infra" {
		t.Fatalf("imported image listed as %v", img)
	}
	got, err := e.R.Images().Get("imported:v1")
	if err != nil {
		t.Fatal(err)
	}
	cfg := got.Config
	if !slices.Equal(cfg.Cmd, []string{"/bin/helper", "sleep", "inf"}) || cfg.WorkingDir != "/tmp" || cfg.User != "app" ||
		cfg.StopSignal != "SIGINT" || !slices.Equal(cfg.ExposedPorts, []string{"8080/udp"}) ||
		!slices.Equal(cfg.Env, []string{"GREETING=hello world", "PATH=/bin"}) {
		t.Errorf("image config %+v", cfg)
	}

	// The image runs its CMD without one in the spec.
	c := e.start(runtime.Spec{Name: "from-import", Image: "imported:v1"})
	r := e.exec(&nodev1.ExecOptions{Container: c.Name, Cmd: []string{"env"}}, nil, false)
	if r.err != nil || r.code != 0 || !strings.Contains(r.stdout, "GREETING=hello world\n") {
		t.Errorf("exec env in the imported image: %+v", r)
	}
	if got := e.Container(c.ID); !slices.Equal(got.Args, []string{"/bin/helper", "sleep", "inf"}) || got.User != "app" {
		t.Errorf("container from the imported image: args %q user %q", got.Args, got.User)
	}

	_, err = e.importImage("bad:1", []string{`CMD ["x"]`, `VOLUME /data`}, e.helperTar())
	wantStatus(t, "import with VOLUME", err, codes.InvalidArgument,
		`invalid change "VOLUME /data": VOLUME is not a valid change command; accepted: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, WORKDIR`)
	_, err = e.importImage("Bad:1", nil, e.helperTar())
	wantStatus(t, "import with a bad reference", err, codes.InvalidArgument, "import: invalid reference format: Bad:1…")
	_, err = e.importImage("", nil, []byte("not a tarball, not at all"))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
		t.Errorf("import of garbage: %v", err)
	}
	if n := len(e.images()); n != before+1 {
		t.Errorf("%d images after one good import and three bad ones, want %d", n, before+1)
	}
}

// dockerSave builds a `docker save` archive (the layout before Docker 25:
// <id>/layer.tar, <config-digest>.json, manifest.json) of one image with
// the tags and one small layer; created tells images apart.
func dockerSave(t *testing.T, created string, tags ...string) (archive []byte, id string) {
	t.Helper()
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "etc/loaded", Mode: 0o644, Size: 4},
	} {
		if err := lw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	lw.Write([]byte("yes\n"))
	lw.Close()
	sum := sha256.Sum256(layer.Bytes())
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": created,
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	csum := sha256.Sum256(cfg)
	chex := hex.EncodeToString(csum[:])
	layerDir := hex.EncodeToString(sum[:])
	mf, _ := json.Marshal([]map[string]any{{
		"Config": chex + ".json", "RepoTags": tags, "Layers": []string{layerDir + "/layer.tar"},
	}})
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		body []byte
	}{{layerDir + "/layer.tar", layer.Bytes()}, {chex + ".json", cfg}, {"manifest.json", mf}} {
		if strings.Contains(f.name, "/") {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: layerDir + "/", Mode: 0o755})
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.body)
	}
	tw.Close()
	return out.Bytes(), "sha256:" + chex
}

func (e *env) load(archive []byte) (*nodev1.LoadImageResponse, error) {
	stream, err := e.c.LoadImage(ctxT(e.t))
	if err != nil {
		return nil, err
	}
	for b := archive; len(b) > 0; {
		n := min(len(b), 1000)
		if err := stream.Send(&nodev1.LoadImageRequest{Data: b[:n]}); err != nil {
			break
		}
		b = b[n:]
	}
	return stream.CloseAndRecv()
}

func TestLoadDockerSave(t *testing.T) {
	e := newEnv(t)
	archive, id := dockerSave(t, "2026-01-02T03:04:05Z", "loaded:1", "example.com/team/loaded:2")
	resp, err := e.load(archive)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range resp.GetImages() {
		got = append(got, l.GetRef()+" "+l.GetId())
	}
	want := []string{"example.com/team/loaded:2 " + id, "loaded:1 " + id}
	if !slices.Equal(got, want) {
		t.Errorf("loaded %q, want %q", got, want)
	}
	if img := e.imageWithTag("loaded:1"); img == nil || img.GetId() != id {
		t.Errorf("loaded image listed as %v", img)
	}

	// Untagged: the id is the line.
	untagged, uid := dockerSave(t, "2026-01-03T00:00:00Z")
	resp, err = e.load(untagged)
	if err != nil || len(resp.GetImages()) != 1 || resp.GetImages()[0].GetRef() != "" || resp.GetImages()[0].GetId() != uid {
		t.Errorf("load of an untagged image: %v %v", resp, err)
	}

	_, err = e.load([]byte(strings.Repeat("garbage", 1000)))
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument {
		t.Errorf("load of garbage: %v", err)
	}
}

func TestRemoveAndPrune(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := e.create(runtime.Spec{Name: "user"})

	_, err := e.c.RemoveImage(ctx, &nodev1.RemoveImageRequest{Ref: exectest.HelperImage})
	wantStatus(t, "rm of an image in use", err, codes.FailedPrecondition,
		"conflict: unable to remove image helper:latest: image is being used by container "+c.ID)
	_, err = e.c.RemoveImage(ctx, &nodev1.RemoveImageRequest{Ref: "nosuch"})
	wantStatus(t, "rm of a missing image", err, codes.NotFound, "No such image: nosuch:latest")
	_, err = e.c.RemoveImage(ctx, &nodev1.RemoveImageRequest{Ref: "sha256:ffffffff"})
	wantStatus(t, "rm of a missing id", err, codes.NotFound, "No such image: sha256:ffffffff")

	dangling, err := e.importImage("", []string{`LABEL n=1`}, e.helperTar())
	if err != nil {
		t.Fatal(err)
	}
	spare, err := e.importImage("spare:1", []string{`LABEL n=2`}, e.helperTar())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.RemoveImage(ctx, &nodev1.RemoveImageRequest{Ref: "nosuch:1"}); status.Code(err) != codes.NotFound {
		t.Errorf("rm nosuch:1: %v", err)
	}

	resp, err := e.c.PruneImages(ctx, &nodev1.PruneImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetItems()) != 1 || resp.GetItems()[0].GetDeleted() != dangling || resp.GetSpaceReclaimed() == 0 {
		t.Errorf("prune: %v", resp)
	}
	if e.imageWithTag("spare:1") == nil {
		t.Error("prune without -a removed a tagged image")
	}

	resp, err = e.c.PruneImages(ctx, &nodev1.PruneImagesRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	items := resp.GetItems()
	if len(items) < 2 || items[0].GetUntagged() != "spare:1" || items[1].GetDeleted() != spare || resp.GetSpaceReclaimed() == 0 {
		t.Errorf("prune -a: %v", resp)
	}
	if e.imageWithTag(exectest.HelperImage) == nil {
		t.Error("prune -a removed the image a container uses")
	}

	// force untags an image in use; it stays, dangling, for its container.
	rm, err := e.c.RemoveImage(ctx, &nodev1.RemoveImageRequest{Ref: exectest.HelperImage, Force: true})
	if err != nil || len(rm.GetItems()) != 1 || rm.GetItems()[0].GetUntagged() != exectest.HelperImage {
		t.Errorf("rm -f of an image in use: %v %v", rm, err)
	}
	if n := len(e.images()); n != 1 {
		t.Errorf("%d images after rm -f, want the dangling one in use", n)
	}
	// Its container now shows the image by ID: the reference is gone.
	list, err := e.c.ListContainers(ctx, &nodev1.ListContainersRequest{All: true})
	if err != nil || len(list.GetContainers()) != 1 || list.GetContainers()[0].GetImage() != c.ImageID {
		t.Errorf("container of an untagged image: %v %v", list, err)
	}
}

func TestContainers(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	web := e.start(runtime.Spec{Name: "web", Cmd: []string{"trap"}, Labels: map[string]string{"tier": "front"}})
	failing := e.start(runtime.Spec{Name: "failing", Cmd: []string{"exit", "3"}})
	noisy := e.start(runtime.Spec{Name: "noisy", Cmd: []string{"stderr", "to-stderr"}})
	lines := e.start(runtime.Spec{Name: "lines", Cmd: []string{"log", "5", "8"}})
	e.create(runtime.Spec{Name: "idle"})
	for _, c := range []runtime.Container{failing, noisy, lines} {
		e.wait(c.ID)
	}
	e.waitLog("web", "ready")
	web = e.Container(web.ID)
	e.srv.now = func() time.Time { return web.StartedAt.Add(5*time.Minute + 30*time.Second) }

	t.Run("ls", func(t *testing.T) {
		resp, err := e.c.ListContainers(ctx, &nodev1.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if cs := resp.GetContainers(); len(cs) != 1 || cs[0].GetId() != web.ID || cs[0].GetStatus() != "Up 5 minutes" ||
			cs[0].GetState() != "running" || cs[0].GetImage() != "helper:latest" || cs[0].GetCommand() != "trap" ||
			!slices.Equal(cs[0].GetNames(), []string{"/web"}) || cs[0].GetLabels()["tier"] != "front" || cs[0].GetStartedAt() == nil {
			t.Errorf("ls: %v", cs)
		}
		resp, err = e.c.ListContainers(ctx, &nodev1.ListContainersRequest{All: true})
		if err != nil {
			t.Fatal(err)
		}
		status := map[string]string{}
		var order []string
		for _, c := range resp.GetContainers() {
			status[c.GetNames()[0]] = c.GetStatus()
			order = append(order, c.GetNames()[0])
		}
		if want := []string{"/idle", "/lines", "/noisy", "/failing", "/web"}; !slices.Equal(order, want) {
			t.Errorf("ls -a order %q, want newest first %q", order, want)
		}
		if status["/idle"] != "Created" || status["/failing"] != "Exited (3) 5 minutes ago" || status["/noisy"] != "Exited (0) 5 minutes ago" {
			t.Errorf("ls -a statuses: %q", status)
		}
	})

	t.Run("inspect", func(t *testing.T) {
		resp, err := e.c.InspectContainer(ctx, &nodev1.InspectContainerRequest{Ref: "web"})
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			ID    string `json:"Id"`
			Name  string
			Path  string
			Args  []string
			Image string
			State struct {
				Status    string
				Running   bool
				Pid       int
				StartedAt time.Time
			}
			Config struct {
				Image      string
				Cmd        []string
				Entrypoint []string
				Env        []string
				Labels     map[string]string
			}
		}
		if err := json.Unmarshal(resp.GetJson(), &got); err != nil {
			t.Fatalf("%v\n%s", err, resp.GetJson())
		}
		if got.ID != web.ID || got.Name != "/web" || got.Path != "trap" || len(got.Args) != 0 || got.Image != web.ImageID ||
			got.State.Status != "running" || !got.State.Running || got.State.Pid != web.Pid || !got.State.StartedAt.Equal(web.StartedAt) ||
			got.Config.Image != "helper:latest" || !slices.Equal(got.Config.Cmd, []string{"trap"}) || got.Config.Entrypoint != nil ||
			!slices.Contains(got.Config.Env, "PATH=/bin") || got.Config.Labels["tier"] != "front" {
			t.Errorf("inspect:\n%s", resp.GetJson())
		}
		resp, err = e.c.InspectContainer(ctx, &nodev1.InspectContainerRequest{Ref: "idle"})
		if err != nil || !bytes.Contains(resp.GetJson(), []byte(`"Cmd":["/bin/helper","sleep","inf"]`)) ||
			!bytes.Contains(resp.GetJson(), []byte(`"StartedAt":"0001-01-01T00:00:00Z"`)) {
			t.Errorf("inspect of a created container (the image's Cmd, zero times as Docker's):\n%s %v", resp.GetJson(), err)
		}
		_, err = e.c.InspectContainer(ctx, &nodev1.InspectContainerRequest{Ref: "nope"})
		wantStatus(t, "inspect nope", err, codes.NotFound, "No such container: nope")
	})

	t.Run("logs", func(t *testing.T) {
		es, err := e.logs(&nodev1.ContainerLogsRequest{Ref: "noisy", Tail: -1})
		if err != nil || len(es) != 1 || es[0].GetStream() != "stderr" || string(es[0].GetLine()) != "to-stderr\n" || es[0].GetTimeUnixNano() == 0 {
			t.Errorf("logs: %v %v", es, err)
		}
		if es, err := e.logs(&nodev1.ContainerLogsRequest{Ref: "noisy", Tail: -1, Stdout: true}); err != nil || len(es) != 0 {
			t.Errorf("stdout only: %v %v", es, err)
		}
		es, err = e.logs(&nodev1.ContainerLogsRequest{Ref: "noisy", Tail: -1, Stderr: true, Timestamps: true})
		if err != nil || len(es) != 1 || !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z to-stderr\n$`).Match(es[0].GetLine()) {
			t.Errorf("timestamps: %v %v", es, err)
		}
		es, err = e.logs(&nodev1.ContainerLogsRequest{Ref: "lines", Tail: 2})
		if err != nil || len(es) != 2 || string(es[0].GetLine()) != "3 xxxxxx\n" || string(es[1].GetLine()) != "4 xxxxxx\n" {
			t.Errorf("tail 2: %v %v", es, err)
		}
		es, err = e.logs(&nodev1.ContainerLogsRequest{Ref: "lines", Tail: -1, SinceUnixNano: time.Now().Add(time.Hour).UnixNano()})
		if err != nil || len(es) != 0 {
			t.Errorf("since the future: %v %v", es, err)
		}
		if es, err := e.logs(&nodev1.ContainerLogsRequest{Ref: "idle", Tail: -1}); err != nil || len(es) != 0 {
			t.Errorf("logs of a container never started: %v %v", es, err)
		}
		_, err = e.logs(&nodev1.ContainerLogsRequest{Ref: "nope"})
		wantStatus(t, "logs nope", err, codes.NotFound, "No such container: nope")
	})

	t.Run("top", func(t *testing.T) {
		resp, err := e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(resp.GetTitles(), []string{"UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"}) || len(resp.GetProcesses()) != 2 {
			t.Fatalf("top: %v", resp)
		}
		var cmds []string
		for _, p := range resp.GetProcesses() {
			cmds = append(cmds, p.GetFields()[7])
		}
		if !slices.Contains(cmds, "trap") {
			t.Errorf("top commands %q lack the container's command", cmds)
		}
		resp, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "web", PsArgs: []string{"-o", "pid,comm"}})
		if err != nil || !slices.Equal(resp.GetTitles(), []string{"PID", "COMMAND"}) || len(resp.GetProcesses()) != 2 {
			t.Errorf("top -o pid,comm: %v %v", resp, err)
		}
		// A ps that cannot run is reported as such.
		e.srv.ps = "/nonexistent/ps"
		_, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "web"})
		wantStatus(t, "top with a broken ps", err, codes.Unknown, "ps: …")
		e.srv.ps = ""
		// Without ps on the node a plain top still answers, from /proc;
		// ps options cannot.
		t.Setenv("PATH", t.TempDir())
		resp, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "web"})
		if err != nil || !slices.Equal(resp.GetTitles(), []string{"UID", "PID", "PPID", "CMD"}) || len(resp.GetProcesses()) != 2 {
			t.Errorf("top without ps: %v %v", resp, err)
		}
		_, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "web", PsArgs: []string{"aux"}})
		wantStatus(t, "top aux without ps", err, codes.FailedPrecondition, "ps is not installed on this node: top with ps options needs it")
		_, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "web", PsArgs: []string{"-o", "comm=PID"}})
		wantStatus(t, "top renaming to PID", err, codes.InvalidArgument, `specifying "comm=PID" is not allowed`)
		_, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "idle"})
		wantStatus(t, "top of a created container", err, codes.FailedPrecondition, "container idle is not running")
		_, err = e.c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: "nope"})
		wantStatus(t, "top nope", err, codes.NotFound, "No such container: nope")
	})

	t.Run("exec", func(t *testing.T) {
		if r := e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"echo", "hi"}}, nil, false); r.err != nil || r.code != 0 || r.stdout != "hi\n" || r.stderr != "" {
			t.Errorf("exec echo: %+v", r)
		}
		if r := e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"exit", "7"}}, nil, false); r.err != nil || r.code != 7 {
			t.Errorf("exec exit 7: %+v", r)
		}
		if r := e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"stderr", "oops"}}, nil, false); r.err != nil || r.stderr != "oops\n" || r.stdout != "" {
			t.Errorf("exec stderr: %+v", r)
		}
		r := e.exec(&nodev1.ExecOptions{Container: web.ID[:12], Cmd: []string{"env"}, Env: []string{"EXTRA=1"}, User: "app", Workdir: "/tmp"}, nil, false)
		if r.err != nil || !strings.Contains(r.stdout, "EXTRA=1\n") || !strings.Contains(r.stdout, "HOME=/home/app\n") {
			t.Errorf("exec env as app: %+v", r)
		}
		if r := e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"pwd"}, Workdir: "/tmp"}, nil, false); r.stdout != "/tmp\n" {
			t.Errorf("exec -w /tmp pwd: %+v", r)
		}
		r = e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"cat", "/dev/stdin"}, Interactive: true}, []string{"hello ", "stdin\n"}, true)
		if r.err != nil || r.code != 0 || r.stdout != "hello stdin\n" {
			t.Errorf("exec -i cat: %+v", r)
		}
		// Without -i the process reads /dev/null, whatever the client sends.
		r = e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"cat", "/dev/stdin"}}, []string{"ignored"}, false)
		if r.err != nil || r.code != 0 || r.stdout != "" {
			t.Errorf("exec cat without -i: %+v", r)
		}
		r = e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"tty"}, Tty: true, Interactive: true}, nil, true)
		if r.err != nil || r.code != 0 || !strings.Contains(r.stdout, "/dev/pts/") {
			t.Errorf("exec -it tty: %+v", r)
		}
		r = e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"stderr", "through the tty"}, Tty: true}, nil, false)
		if r.err != nil || !strings.Contains(r.stdout, "through the tty") || r.stderr != "" {
			t.Errorf("exec -t: stderr goes to the terminal: %+v", r)
		}

		r = e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"write", "/tmp/detached", "yes"}, Detach: true}, nil, false)
		if r.err != nil || r.code != 0 {
			t.Errorf("exec -d: %+v", r)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"cat", "/tmp/detached"}}, nil, false)
			if r.stdout == "yes" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the detached exec never wrote its file: %+v", r)
			}
			time.Sleep(20 * time.Millisecond)
		}

		r = e.exec(&nodev1.ExecOptions{Container: "idle", Cmd: []string{"true"}}, nil, false)
		wantStatus(t, "exec in a created container", r.err, codes.FailedPrecondition, "container idle is not running")
		r = e.exec(&nodev1.ExecOptions{Container: "idle", Cmd: []string{"true"}, Detach: true}, nil, false)
		wantStatus(t, "exec -d in a created container", r.err, codes.FailedPrecondition, "container …")
		r = e.exec(&nodev1.ExecOptions{Container: "nope", Cmd: []string{"true"}}, nil, false)
		wantStatus(t, "exec in nope", r.err, codes.NotFound, "No such container: nope")
		r = e.exec(&nodev1.ExecOptions{Container: "web"}, nil, false)
		wantStatus(t, "exec without a command", r.err, codes.InvalidArgument, "No exec command specified")
		r = e.exec(&nodev1.ExecOptions{Container: "web", Cmd: []string{"nosuchcommand"}}, nil, false)
		if r.err == nil || !strings.Contains(r.err.Error(), "executable file not found") {
			t.Errorf("exec of a missing command: %+v", r)
		}
	})

	// Last, as it stops web: a follower sees what comes after it started
	// and ends by itself when the container exits.
	t.Run("logs follow", func(t *testing.T) {
		stream, err := e.c.ContainerLogs(ctx, &nodev1.ContainerLogsRequest{Ref: "web", Follow: true, Tail: -1})
		if err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err != nil || string(first.GetLine()) != "ready\n" {
			t.Fatalf("first followed line: %v %v", first, err)
		}
		if err := e.R.Kill("web", unix.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var rest []string
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			rest = append(rest, string(m.GetLine()))
		}
		if !slices.Equal(rest, []string{"got SIGTERM\n"}) {
			t.Errorf("followed after ready: %q", rest)
		}
	})
}
