package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
)

// NodeClient implements NodeAPI over the node API (proto/node/v1) that a
// manager serves beside its control API, for the node it runs on.
type NodeClient struct {
	connect func() (nodev1.NodeClient, error)
	// TerminalSize is the local terminal's size, sent to `exec -t`
	// processes; nil, or false, sends none.
	TerminalSize func() (rows, cols uint16, ok bool)
}

var _ NodeAPI = (*NodeClient)(nil)

// NewNodeClient returns a NodeAPI that calls c.
func NewNodeClient(c nodev1.NodeClient) *NodeClient {
	return &NodeClient{connect: func() (nodev1.NodeClient, error) { return c, nil }}
}

// NodeClient returns a NodeAPI over the App's manager connection: the one
// the control client uses (-H, $SHOAL_HOST or the local socket), dialled
// on first use, so that errors read the same ("Cannot connect…", "No such
// container: x") and `image --help` never dials.
func (a *App) NodeClient() *NodeClient {
	return &NodeClient{connect: a.nodeClient, TerminalSize: stdoutSize}
}

func (a *App) nodeClient() (nodev1.NodeClient, error) {
	if _, err := a.control(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return nil, errors.New("the connection to the manager is closed")
	}
	return nodev1.NewNodeClient(a.conn), nil
}

// stdoutSize is the size of the terminal on stdout.
func stdoutSize() (rows, cols uint16, ok bool) {
	ws, err := unix.IoctlGetWinsize(int(os.Stdout.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 || ws.Col == 0 {
		return 0, 0, false
	}
	return ws.Row, ws.Col, true
}

// uploadChunk is the size of the data messages of import and load: big
// enough to keep a local socket busy, well under gRPC's 4 MiB limit.
const uploadChunk = 256 << 10

// ImageList implements NodeAPI.
func (n *NodeClient) ImageList(ctx context.Context, all bool) ([]ImageSummary, error) {
	c, err := n.connect()
	if err != nil {
		return nil, err
	}
	resp, err := c.ListImages(ctx, &nodev1.ListImagesRequest{All: all})
	if err != nil {
		return nil, err
	}
	out := make([]ImageSummary, len(resp.GetImages()))
	for i, img := range resp.GetImages() {
		out[i] = ImageSummary{
			ID:          img.GetId(),
			RepoTags:    img.GetRepoTags(),
			RepoDigests: img.GetRepoDigests(),
			Size:        img.GetSize(),
		}
		if img.GetCreated() != nil {
			out[i].Created = img.GetCreated().AsTime()
		}
	}
	return out, nil
}

// ImageImport implements NodeAPI.
func (n *NodeClient) ImageImport(ctx context.Context, src io.Reader, ref string, opts ImageImportOptions) (string, error) {
	c, err := n.connect()
	if err != nil {
		return "", err
	}
	// Cancelling the call on a read error is what tells the manager the
	// tarball is incomplete; a clean end of the stream would import it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.ImportImage(ctx)
	if err != nil {
		return "", err
	}
	hdr := &nodev1.ImportImageHeader{Ref: ref, Changes: opts.Changes, Message: opts.Message}
	err = stream.Send(&nodev1.ImportImageRequest{Msg: &nodev1.ImportImageRequest_Header{Header: hdr}})
	if err == nil {
		err = upload(src, func(b []byte) error {
			return stream.Send(&nodev1.ImportImageRequest{Msg: &nodev1.ImportImageRequest_Data{Data: b}})
		})
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	// After a send ends in io.EOF the manager has answered already (an
	// invalid --change, say); CloseAndRecv brings its error.
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return "", err
	}
	return resp.GetId(), nil
}

// ImageLoad implements NodeAPI.
func (n *NodeClient) ImageLoad(ctx context.Context, src io.Reader) ([]LoadedImage, error) {
	c, err := n.connect()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.LoadImage(ctx)
	if err != nil {
		return nil, err
	}
	err = upload(src, func(b []byte) error { return stream.Send(&nodev1.LoadImageRequest{Data: b}) })
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	out := make([]LoadedImage, len(resp.GetImages()))
	for i, l := range resp.GetImages() {
		out[i] = LoadedImage{Ref: l.GetRef(), ID: l.GetId()}
	}
	return out, nil
}

// readError is a failure to read the local file, as opposed to the
// stream's io.EOF that means the manager has answered.
type readError struct{ err error }

func (e *readError) Error() string { return "read archive: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// upload sends src in chunks. It returns a *readError if src fails, and
// the send error (io.EOF when the manager has answered early) otherwise.
func upload(src io.Reader, send func([]byte) error) error {
	buf := make([]byte, uploadChunk)
	for {
		// A plain Read, not ReadFull: for `exec -i` each keystroke must
		// go out as it comes.
		k, err := src.Read(buf)
		if k > 0 {
			// Send marshals the message before it returns, so buf can be
			// reused at once.
			if serr := send(buf[:k]); serr != nil {
				return serr
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case err != nil:
			return &readError{err}
		}
	}
}

// ImageRemove implements NodeAPI.
func (n *NodeClient) ImageRemove(ctx context.Context, ref string, force, noPrune bool) ([]ImageDeleteItem, error) {
	c, err := n.connect()
	if err != nil {
		return nil, err
	}
	resp, err := c.RemoveImage(ctx, &nodev1.RemoveImageRequest{Ref: ref, Force: force, NoPrune: noPrune})
	if err != nil {
		return nil, err
	}
	return deleteItems(resp.GetItems()), nil
}

// ImagePrune implements NodeAPI.
func (n *NodeClient) ImagePrune(ctx context.Context, all bool) ([]ImageDeleteItem, uint64, error) {
	c, err := n.connect()
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.PruneImages(ctx, &nodev1.PruneImagesRequest{All: all})
	if err != nil {
		return nil, 0, err
	}
	return deleteItems(resp.GetItems()), resp.GetSpaceReclaimed(), nil
}

func deleteItems(items []*nodev1.ImageDeleteItem) []ImageDeleteItem {
	out := make([]ImageDeleteItem, len(items))
	for i, d := range items {
		out[i] = ImageDeleteItem{Untagged: d.GetUntagged(), Deleted: d.GetDeleted()}
	}
	return out
}

// ContainerList implements NodeAPI.
func (n *NodeClient) ContainerList(ctx context.Context, all bool) ([]ContainerSummary, error) {
	c, err := n.connect()
	if err != nil {
		return nil, err
	}
	resp, err := c.ListContainers(ctx, &nodev1.ListContainersRequest{All: all})
	if err != nil {
		return nil, err
	}
	out := make([]ContainerSummary, len(resp.GetContainers()))
	for i, ct := range resp.GetContainers() {
		out[i] = ContainerSummary{
			ID:      ct.GetId(),
			Image:   ct.GetImage(),
			Command: ct.GetCommand(),
			Status:  ct.GetStatus(),
			Ports:   ct.GetPorts(),
			Names:   ct.GetNames(),
			State:   ct.GetState(),
		}
		if ct.GetCreated() != nil {
			out[i].Created = ct.GetCreated().AsTime()
		}
	}
	return out, nil
}

// ContainerLogs implements NodeAPI.
func (n *NodeClient) ContainerLogs(ctx context.Context, id string, opts ContainerLogsOptions, stdout, stderr io.Writer) error {
	c, err := n.connect()
	if err != nil {
		return err
	}
	req := &nodev1.ContainerLogsRequest{
		Ref: id, Follow: opts.Follow, Tail: opts.Tail, Timestamps: opts.Timestamps,
		Stdout: true, Stderr: true,
	}
	if !opts.Since.IsZero() {
		req.SinceUnixNano = opts.Since.UnixNano()
	}
	stream, err := c.ContainerLogs(ctx, req)
	if err != nil {
		return err
	}
	for {
		e, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted while following
			}
			return err
		}
		w := stdout
		if e.GetStream() == "stderr" {
			w = stderr
		}
		if _, err := w.Write(e.GetLine()); err != nil {
			return err
		}
	}
}

// ContainerExec implements NodeAPI. stdin is read only with
// opts.Interactive; its end closes the process's stdin.
func (n *NodeClient) ContainerExec(ctx context.Context, id string, opts ExecOptions, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c, err := n.connect()
	if err != nil {
		return -1, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Exec(ctx)
	if err != nil {
		return -1, err
	}
	// The stdin copier and the resize watcher both send; a gRPC stream
	// takes one sender at a time.
	var mu sync.Mutex
	send := func(m *nodev1.ExecRequest) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	o := &nodev1.ExecOptions{
		Container: id, Cmd: opts.Cmd, Tty: opts.Tty, Interactive: opts.Interactive && stdin != nil,
		Detach: opts.Detach, Env: opts.Env, User: opts.User, Workdir: opts.WorkDir,
	}
	if err := send(&nodev1.ExecRequest{Msg: &nodev1.ExecRequest_Options{Options: o}}); err != nil && !errors.Is(err, io.EOF) {
		return -1, err
	}
	if o.Tty && !o.Detach && n.TerminalSize != nil {
		stop := n.watchResize(send)
		defer stop()
	}
	if o.Interactive && !o.Detach {
		// This goroutine may outlive the call, blocked reading a terminal
		// that has nothing more to say; its next send then fails and it
		// ends. A CLI process exits right after, so nothing piles up.
		go func() {
			err := upload(stdin, func(b []byte) error {
				return send(&nodev1.ExecRequest{Msg: &nodev1.ExecRequest_Stdin{Stdin: b}})
			})
			if err == nil {
				_ = send(&nodev1.ExecRequest{Msg: &nodev1.ExecRequest_StdinEof{StdinEof: true}})
			}
		}()
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if stdout == nil {
		stdout = io.Discard
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return -1, errors.New("exec ended without an exit code")
		}
		if err != nil {
			return -1, err
		}
		switch msg := m.GetMsg().(type) {
		case *nodev1.ExecResponse_Stdout:
			_, err = stdout.Write(msg.Stdout)
		case *nodev1.ExecResponse_Stderr:
			_, err = stderr.Write(msg.Stderr)
		case *nodev1.ExecResponse_Exit:
			return int(msg.Exit.GetCode()), nil
		}
		if err != nil {
			return -1, fmt.Errorf("write output: %w", err)
		}
	}
}

// watchResize sends the terminal's size now and whenever it changes
// (SIGWINCH), until the returned stop is called.
func (n *NodeClient) watchResize(send func(*nodev1.ExecRequest) error) (stop func()) {
	sendSize := func() {
		if rows, cols, ok := n.TerminalSize(); ok {
			_ = send(&nodev1.ExecRequest{Msg: &nodev1.ExecRequest_Resize{Resize: &nodev1.Resize{Rows: uint32(rows), Cols: uint32(cols)}}})
		}
	}
	sendSize()
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				sendSize()
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// ContainerInspect implements NodeAPI.
func (n *NodeClient) ContainerInspect(ctx context.Context, id string) ([]byte, error) {
	c, err := n.connect()
	if err != nil {
		return nil, err
	}
	resp, err := c.InspectContainer(ctx, &nodev1.InspectContainerRequest{Ref: id})
	if err != nil {
		return nil, err
	}
	return resp.GetJson(), nil
}

// ContainerTop implements NodeAPI.
func (n *NodeClient) ContainerTop(ctx context.Context, id string, psArgs []string) ([]string, [][]string, error) {
	c, err := n.connect()
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.TopContainer(ctx, &nodev1.TopContainerRequest{Ref: id, PsArgs: psArgs})
	if err != nil {
		return nil, nil, err
	}
	rows := make([][]string, len(resp.GetProcesses()))
	for i, p := range resp.GetProcesses() {
		rows[i] = p.GetFields()
	}
	return resp.GetTitles(), rows, nil
}
