package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
)

// fakeNode is an in-memory node API: it records what import and exec
// received and answers from fixed data.
type fakeNode struct {
	nodev1.UnimplementedNodeServer

	mu         sync.Mutex
	header     *nodev1.ImportImageHeader
	imported   []byte
	chunks     int
	importErr  chan error // what each ImportImage call ended with
	execOpts   *nodev1.ExecOptions
	resizes    []*nodev1.Resize
	logsReq    *nodev1.ContainerLogsRequest
	rejectImps bool // answer InvalidArgument right after the header
}

func newFakeNode() *fakeNode { return &fakeNode{importErr: make(chan error, 4)} }

func (f *fakeNode) ImportImage(stream nodev1.Node_ImportImageServer) error {
	err := f.importImage(stream)
	f.importErr <- err
	return err
}

func (f *fakeNode) importImage(stream nodev1.Node_ImportImageServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.header = first.GetHeader()
	reject := f.rejectImps
	f.mu.Unlock()
	if reject {
		return status.Error(codes.InvalidArgument, `invalid change "VOLUME /x": VOLUME is not a valid change command`)
	}
	var data bytes.Buffer
	n := 0
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data.Write(m.GetData())
		n++
	}
	f.mu.Lock()
	f.imported, f.chunks = data.Bytes(), n
	f.mu.Unlock()
	return stream.SendAndClose(&nodev1.ImportImageResponse{Id: "sha256:1234567890ab"})
}

func (f *fakeNode) LoadImage(stream nodev1.Node_LoadImageServer) error {
	var n int
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		n += len(m.GetData())
	}
	if n == 0 {
		return status.Error(codes.InvalidArgument, "load: empty archive")
	}
	return stream.SendAndClose(&nodev1.LoadImageResponse{Images: []*nodev1.LoadedImage{{Ref: "web:1", Id: "sha256:aa"}, {Id: "sha256:bb"}}})
}

func (f *fakeNode) ListImages(context.Context, *nodev1.ListImagesRequest) (*nodev1.ListImagesResponse, error) {
	return &nodev1.ListImagesResponse{Images: []*nodev1.Image{{
		Id: "sha256:aaaaaaaaaaaaaaaaaaaa", RepoTags: []string{"web:1"}, Created: timestamppb.New(epoch.Add(-2 * time.Hour)), Size: 5_300_000,
	}}}, nil
}

func (f *fakeNode) RemoveImage(_ context.Context, req *nodev1.RemoveImageRequest) (*nodev1.RemoveImageResponse, error) {
	if req.GetRef() != "web:1" {
		return nil, status.Error(codes.NotFound, "No such image: "+req.GetRef())
	}
	return &nodev1.RemoveImageResponse{Items: []*nodev1.ImageDeleteItem{{Untagged: "web:1"}, {Deleted: "sha256:aa"}}}, nil
}

func (f *fakeNode) PruneImages(context.Context, *nodev1.PruneImagesRequest) (*nodev1.PruneImagesResponse, error) {
	return &nodev1.PruneImagesResponse{Items: []*nodev1.ImageDeleteItem{{Deleted: "sha256:bb"}}, SpaceReclaimed: 2_000_000}, nil
}

func (f *fakeNode) ListContainers(context.Context, *nodev1.ListContainersRequest) (*nodev1.ListContainersResponse, error) {
	return &nodev1.ListContainersResponse{Containers: []*nodev1.Container{{
		Id: "cccccccccccccccccccccccccc", Names: []string{"/web.1.abc"}, Image: "web:1", Command: "/bin/app serve",
		Created: timestamppb.New(epoch.Add(-10 * time.Minute)), State: "running", Status: "Up 9 minutes",
	}}}, nil
}

func (f *fakeNode) InspectContainer(_ context.Context, req *nodev1.InspectContainerRequest) (*nodev1.InspectContainerResponse, error) {
	if req.GetRef() != "web" {
		return nil, status.Error(codes.NotFound, "No such container: "+req.GetRef())
	}
	return &nodev1.InspectContainerResponse{Json: []byte(`{"Id":"ccc","State":{"Status":"running"}}`)}, nil
}

func (f *fakeNode) ContainerLogs(req *nodev1.ContainerLogsRequest, stream nodev1.Node_ContainerLogsServer) error {
	f.mu.Lock()
	f.logsReq = req
	f.mu.Unlock()
	for _, e := range []*nodev1.LogEntry{{Stream: "stdout", Line: []byte("out 1\n")}, {Stream: "stderr", Line: []byte("err 1\n")}, {Stream: "stdout", Line: []byte("partial")}} {
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeNode) TopContainer(context.Context, *nodev1.TopContainerRequest) (*nodev1.TopContainerResponse, error) {
	return &nodev1.TopContainerResponse{Titles: []string{"PID", "CMD"}, Processes: []*nodev1.Process{{Fields: []string{"42", "app serve"}}}}, nil
}

// Exec echoes stdin, upper-cased, to stdout until stdin ends, says
// "bye" on stderr and exits with 3. A command "fail" fails the call.
func (f *fakeNode) Exec(stream nodev1.Node_ExecServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	o := first.GetOptions()
	f.mu.Lock()
	f.execOpts = o
	f.mu.Unlock()
	if len(o.GetCmd()) > 0 && o.GetCmd()[0] == "fail" {
		return status.Error(codes.FailedPrecondition, "container web is not running")
	}
	for o.GetInteractive() {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch msg := m.GetMsg().(type) {
		case *nodev1.ExecRequest_Stdin:
			out := bytes.ToUpper(msg.Stdin)
			if err := stream.Send(&nodev1.ExecResponse{Msg: &nodev1.ExecResponse_Stdout{Stdout: out}}); err != nil {
				return err
			}
		case *nodev1.ExecRequest_Resize:
			f.mu.Lock()
			f.resizes = append(f.resizes, msg.Resize)
			f.mu.Unlock()
		case *nodev1.ExecRequest_StdinEof:
			o = nil // leave the loop
		}
	}
	if err := stream.Send(&nodev1.ExecResponse{Msg: &nodev1.ExecResponse_Stderr{Stderr: []byte("bye\n")}}); err != nil {
		return err
	}
	return stream.Send(&nodev1.ExecResponse{Msg: &nodev1.ExecResponse_Exit{Exit: &nodev1.ExecExit{Code: 3}}})
}

// newBufNodeClient serves f in memory and returns a NodeClient for it.
func newBufNodeClient(t *testing.T, f *fakeNode) *NodeClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	nodev1.RegisterNodeServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return NewNodeClient(nodev1.NewNodeClient(conn))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNodeClientImportStreams(t *testing.T) {
	f := newFakeNode()
	n := newBufNodeClient(t, f)
	ctx := testCtx(t)
	// Bigger than one chunk, read a few bytes at a time: the whole
	// tarball must arrive, in order, in more than one message.
	tarball := bytes.Repeat([]byte("0123456789abcdef"), 3*uploadChunk/16+7)
	opts := ImageImportOptions{Changes: []string{`CMD ["/bin/app"]`, "ENV A=1"}, Message: "msg"}
	id, err := n.ImageImport(ctx, bytes.NewReader(tarball), "base:1", opts)
	if err != nil || id != "sha256:1234567890ab" {
		t.Fatalf("import: %q %v", id, err)
	}
	<-f.importErr
	f.mu.Lock()
	if h := f.header; h.GetRef() != "base:1" || strings.Join(h.GetChanges(), "|") != `CMD ["/bin/app"]|ENV A=1` || h.GetMessage() != "msg" {
		t.Errorf("header %v", h)
	}
	if !bytes.Equal(f.imported, tarball) || f.chunks < 4 {
		t.Errorf("server got %d bytes in %d chunks, want %d bytes in ≥ 4", len(f.imported), f.chunks, len(tarball))
	}
	f.mu.Unlock()

	// A read error cancels the call: the server must not see a clean end
	// of stream, which would import a truncated tarball.
	broken := io.MultiReader(bytes.NewReader(tarball[:uploadChunk+10]), iotest.ErrReader(errors.New("disk on fire")))
	_, err = n.ImageImport(ctx, broken, "base:2", ImageImportOptions{})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("import of a failing reader: %v", err)
	}
	if serr := <-f.importErr; status.Code(serr) != codes.Canceled {
		t.Errorf("server side of a failed read ended with %v, want Canceled", serr)
	}

	// An early answer (a bad --change) comes back as the error, not as
	// the io.EOF of the next send.
	f.mu.Lock()
	f.rejectImps = true
	f.mu.Unlock()
	_, err = n.ImageImport(ctx, bytes.NewReader(tarball), "base:3", ImageImportOptions{Changes: []string{"VOLUME /x"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "VOLUME is not a valid change command") {
		t.Errorf("import rejected after the header: %v", err)
	}
}

func TestNodeClientExec(t *testing.T) {
	f := newFakeNode()
	n := newBufNodeClient(t, f)
	n.TerminalSize = func() (uint16, uint16, bool) { return 40, 120, true }
	ctx := testCtx(t)

	var stdout, stderr bytes.Buffer
	opts := ExecOptions{Cmd: []string{"sh"}, Interactive: true, Env: []string{"A=1"}, User: "app", WorkDir: "/srv"}
	code, err := n.ContainerExec(ctx, "web", opts, iotest.OneByteReader(strings.NewReader("hello\n")), &stdout, &stderr)
	if err != nil || code != 3 || stdout.String() != "HELLO\n" || stderr.String() != "bye\n" {
		t.Errorf("exec -i: code %d err %v stdout %q stderr %q", code, err, stdout.String(), stderr.String())
	}
	f.mu.Lock()
	o := f.execOpts
	if o.GetContainer() != "web" || strings.Join(o.GetCmd(), " ") != "sh" || !o.GetInteractive() || o.GetTty() ||
		strings.Join(o.GetEnv(), ",") != "A=1" || o.GetUser() != "app" || o.GetWorkdir() != "/srv" {
		t.Errorf("options %v", o)
	}
	if len(f.resizes) != 0 {
		t.Errorf("resizes without a tty: %v", f.resizes)
	}
	f.mu.Unlock()

	// With a tty the terminal size goes first.
	stdout.Reset()
	code, err = n.ContainerExec(ctx, "web", ExecOptions{Cmd: []string{"sh"}, Interactive: true, Tty: true}, strings.NewReader("x"), &stdout, nil)
	if err != nil || code != 3 || stdout.String() != "X" {
		t.Errorf("exec -it: %d %v %q", code, err, stdout.String())
	}
	f.mu.Lock()
	if len(f.resizes) != 1 || f.resizes[0].GetRows() != 40 || f.resizes[0].GetCols() != 120 {
		t.Errorf("resizes %v", f.resizes)
	}
	f.mu.Unlock()

	// Without -i stdin is not read at all.
	code, err = n.ContainerExec(ctx, "web", ExecOptions{Cmd: []string{"true"}}, iotest.ErrReader(errors.New("must not be read")), nil, nil)
	if err != nil || code != 3 {
		t.Errorf("exec: %d %v", code, err)
	}

	_, err = n.ContainerExec(ctx, "web", ExecOptions{Cmd: []string{"fail"}}, nil, &stdout, &stderr)
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("exec failing: %v", err)
	}
}

// TestNodeCommandsThroughManagerSocket drives the real commands with the
// client cmd/shoal wires in: the node API on the manager's socket (-H /
// $SHOAL_HOST), errors in Docker's words.
func TestNodeCommandsThroughManagerSocket(t *testing.T) {
	h := newHarness(t)
	h.configure = func(a *App) { a.Node = a.NodeClient() }
	if code := h.run("image", "ls"); code != 1 || !strings.Contains(h.stderr.String(), "Cannot connect to the shoal manager") {
		t.Errorf("no manager: exit %d stderr %q", code, h.stderr.String())
	}

	lis, err := net.Listen("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeNode()
	srv := grpc.NewServer()
	nodev1.RegisterNodeServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	h.stdin = "rootfs-bytes"
	if got := h.mustRun("image", "import", "-c", `CMD ["/bin/app"]`, "-", "base:1"); got != "sha256:1234567890ab\n" {
		t.Errorf("import: %q", got)
	}
	<-f.importErr
	f.mu.Lock()
	if string(f.imported) != "rootfs-bytes" || f.header.GetRef() != "base:1" || f.header.GetChanges()[0] != `CMD ["/bin/app"]` {
		t.Errorf("import reached the server as %q %v", f.imported, f.header)
	}
	f.mu.Unlock()
	h.stdin = "archive-bytes"
	if got := h.mustRun("image", "load"); got != "Loaded image: web:1\nLoaded image ID: sha256:bb\n" {
		t.Errorf("load: %q", got)
	}
	if got := h.mustRun("image", "ls"); got != "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\nweb          1         aaaaaaaaaaaa   2 hours ago   5.3MB\n" {
		t.Errorf("image ls:\n%s", got)
	}
	if code := h.run("image", "rm", "web:1", "nosuch"); code != 1 || h.stdout.String() != "Untagged: web:1\nDeleted: sha256:aa\n" ||
		h.stderr.String() != "Error: No such image: nosuch\n" {
		t.Errorf("image rm: exit %d stdout %q stderr %q", code, h.stdout.String(), h.stderr.String())
	}
	if got := h.mustRun("image", "prune", "-f"); got != "Deleted Images:\nDeleted: sha256:bb\n\nTotal reclaimed space: 2MB\n" {
		t.Errorf("image prune: %q", got)
	}

	if got := h.mustRun("container", "ls"); !strings.Contains(got, "cccccccccccc   web:1     \"/bin/app serve\"   10 minutes ago   Up 9 minutes             web.1.abc\n") {
		t.Errorf("container ls:\n%s", got)
	}
	if code := h.run("container", "inspect", "--format", "{{.State.Status}}", "web", "nope"); code != 1 ||
		h.stdout.String() != "running\n" || h.stderr.String() != "Error: No such container: nope\n" {
		t.Errorf("inspect: exit %d stdout %q stderr %q", code, h.stdout.String(), h.stderr.String())
	}
	if code := h.run("container", "logs", "--tail", "5", "-t", "web"); code != 0 || h.stdout.String() != "out 1\npartial" || h.stderr.String() != "err 1\n" {
		t.Errorf("logs: exit %d stdout %q stderr %q", code, h.stdout.String(), h.stderr.String())
	}
	f.mu.Lock()
	if r := f.logsReq; r.GetRef() != "web" || r.GetTail() != 5 || !r.GetTimestamps() || r.GetFollow() || !r.GetStdout() || !r.GetStderr() {
		t.Errorf("logs request %v", r)
	}
	f.mu.Unlock()
	if got := h.mustRun("container", "top", "web"); got != "PID                 CMD\n42                  app serve\n" {
		t.Errorf("top: %q", got)
	}
	h.stdin = "abc"
	if code := h.run("container", "exec", "-i", "web", "sh"); code != 3 || h.stdout.String() != "ABC" || h.stderr.String() != "bye\n" {
		t.Errorf("exec -i: exit %d stdout %q stderr %q", code, h.stdout.String(), h.stderr.String())
	}
	if code := h.run("container", "exec", "web", "fail"); code != 1 || h.stderr.String() != "Error: container web is not running\n" {
		t.Errorf("exec failing: exit %d stderr %q", code, h.stderr.String())
	}
}
