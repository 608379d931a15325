package cli

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// fakeNodeAPI answers the image and container commands from memory.
type fakeNodeAPI struct {
	UnimplementedNodeAPI
	images     []ImageSummary
	containers []ContainerSummary
	imported   string
	execCode   int
	pruneAll   bool
}

func (f *fakeNodeAPI) ImageList(context.Context, bool) ([]ImageSummary, error) { return f.images, nil }

func (f *fakeNodeAPI) ImageImport(_ context.Context, src io.Reader, ref string, _ ImageImportOptions) (string, error) {
	b, _ := io.ReadAll(src)
	f.imported = ref + ":" + string(b)
	return "sha256:0123456789abcdef0123456789abcdef", nil
}

func (f *fakeNodeAPI) ImageLoad(context.Context, io.Reader) ([]LoadedImage, error) {
	return []LoadedImage{{Ref: "nginx:1.27"}, {ID: "sha256:feed"}}, nil
}

func (f *fakeNodeAPI) ImagePrune(_ context.Context, all bool) ([]ImageDeleteItem, uint64, error) {
	f.pruneAll = all
	return []ImageDeleteItem{{Untagged: "old:1"}, {Deleted: "sha256:dead"}}, 1_500_000, nil
}

func (f *fakeNodeAPI) ContainerList(context.Context, bool) ([]ContainerSummary, error) {
	return f.containers, nil
}

func (f *fakeNodeAPI) ContainerExec(_ context.Context, _ string, o ExecOptions, _ io.Reader, stdout, _ io.Writer) (int, error) {
	io.WriteString(stdout, strings.Join(o.Cmd, " ")+"\n")
	return f.execCode, nil
}

// TestNodeLocalCommandsNotImplemented: a manager without the node API
// (an older one, or a remote one over tcp) gives a plain error.
func TestNodeLocalCommandsNotImplemented(t *testing.T) {
	h := newHarness(t)
	for _, args := range [][]string{
		{"image", "ls"}, {"image", "load", "-i", "x.tar"}, {"image", "rm", "nginx"}, {"image", "prune", "-f"},
		{"container", "ls"}, {"container", "logs", "c1"}, {"container", "exec", "c1", "ls"}, {"container", "inspect", "c1"}, {"container", "top", "c1"},
	} {
		if code := h.run(args...); code != 1 {
			t.Errorf("%v: exit %d", args, code)
		}
		if got := h.stderr.String(); got != "Error: not implemented by this manager yet\n" && !strings.Contains(got, "no such file") {
			t.Errorf("%v: stderr %q", args, got)
		}
	}
}

func TestImageAndContainerFormatting(t *testing.T) {
	h := newHarness(t)
	api := &fakeNodeAPI{
		images: []ImageSummary{
			{ID: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", RepoTags: []string{"nginx:1.27", "localhost:5000/web:v1"}, Created: epoch.Add(-48 * time.Hour), Size: 187_654_321},
			{ID: "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", Created: epoch.Add(-3 * time.Hour), Size: 5_000},
		},
		containers: []ContainerSummary{{
			ID: "cccccccccccccccccccccccccc", Image: "nginx:1.27", Command: "/docker-entrypoint.sh nginx -g 'daemon off;'",
			Created: epoch.Add(-5 * time.Minute), Status: "Up 5 minutes", Ports: "80/tcp", Names: []string{"/getstartedlab_web.1.task1a000000"},
		}},
		execCode: 3,
	}
	h.configure = func(a *App) { a.Node = api }

	got := h.mustRun("image", "ls")
	want := strings.Join([]string{
		"REPOSITORY           TAG       IMAGE ID       CREATED       SIZE",
		"<none>               <none>    bbbbbbbbbbbb   3 hours ago   5kB",
		"nginx                1.27      aaaaaaaaaaaa   2 days ago    188MB",
		"localhost:5000/web   v1        aaaaaaaaaaaa   2 days ago    188MB",
		"",
	}, "\n")
	if got != want {
		t.Errorf("image ls:\n%s\nwant:\n%s", got, want)
	}
	if got := h.mustRun("image", "ls", "-q"); got != "bbbbbbbbbbbb\naaaaaaaaaaaa\n" {
		t.Errorf("image ls -q: %q", got)
	}

	got = h.mustRun("container", "ls")
	want = strings.Join([]string{
		"CONTAINER ID   IMAGE        COMMAND                  CREATED         STATUS         PORTS     NAMES",
		"cccccccccccc   nginx:1.27   \"/docker-entrypoint.…\"   5 minutes ago   Up 5 minutes   80/tcp    getstartedlab_web.1.task1a000000",
		"",
	}, "\n")
	if got != want {
		t.Errorf("container ls:\n%s\nwant:\n%s", got, want)
	}

	h.stdin = "rootfs-bytes"
	if got := h.mustRun("image", "import", "-", "base:1"); got != "sha256:0123456789abcdef0123456789abcdef\n" || api.imported != "base:1:rootfs-bytes" {
		t.Errorf("import: %q %q", got, api.imported)
	}
	if got := h.mustRun("image", "load"); got != "Loaded image: nginx:1.27\nLoaded image ID: sha256:feed\n" {
		t.Errorf("load: %q", got)
	}
	h.stdin = "n\n"
	if got := h.mustRun("image", "prune"); got != "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] " || api.pruneAll {
		t.Errorf("prune declined: %q", got)
	}
	h.stdin = "y\n"
	if got := h.mustRun("image", "prune", "-a"); !strings.HasSuffix(got, "Deleted Images:\nUntagged: old:1\nDeleted: sha256:dead\n\nTotal reclaimed space: 1.5MB\n") || !api.pruneAll {
		t.Errorf("prune: %q", got)
	}

	// exec passes flags after CONTAINER to the command and exits with its code.
	if code := h.run("container", "exec", "c1", "ls", "-la"); code != 3 || h.stdout.String() != "ls -la\n" || h.stderr.String() != "" {
		t.Errorf("exec: exit %d stdout %q stderr %q", code, h.stdout.String(), h.stderr.String())
	}
}
