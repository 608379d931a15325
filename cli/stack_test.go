package cli

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestStackListServicesPs(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	h.fake.stacks = []*controlv1.StackSummary{{Name: "web10", Services: 1}, {Name: "web2", Services: 3}, {Name: "getstartedlab", Services: 2}}

	if got, want := h.mustRun("stack", "ls"), "NAME            SERVICES\ngetstartedlab   2\nweb2            3\nweb10           1\n"; got != want {
		t.Errorf("stack ls:\n%s\nwant:\n%s", got, want)
	}
	if got, want := h.mustRun("stack", "ls", "--format", "{{.Name}}={{.Services}}"), "getstartedlab=2\nweb2=3\nweb10=1\n"; got != want {
		t.Errorf("stack ls --format:\n%s", got)
	}
	if got, want := h.mustRun("stack", "ls", "--format", "json"), `{"Name":"getstartedlab","Services":"2"}`; !strings.HasPrefix(got, want) {
		t.Errorf("stack ls --format json:\n%s", got)
	}

	got := h.mustRun("stack", "services", "getstartedlab")
	want := strings.Join([]string{
		"ID             NAME                       MODE         REPLICAS   IMAGE                             PORTS",
		"vizsvc000000   getstartedlab_visualizer   replicated   0/1        dockersamples/visualizer:stable   *:8080->8080/tcp",
		"websvc000000   getstartedlab_web          replicated   2/2        nginx:1.27                        *:4000->80/tcp",
		"",
	}, "\n")
	if got != want {
		t.Errorf("stack services:\n%s\nwant:\n%s", got, want)
	}
	if got := h.mustRun("stack", "services", "-q", "getstartedlab"); got != "vizsvc000000\nwebsvc000000\n" {
		t.Errorf("stack services -q:\n%s", got)
	}
	if got := h.mustRun("stack", "services", "other"); got != "" || h.stderr.String() != "Nothing found in stack: other\n" {
		t.Errorf("empty stack services: stdout %q stderr %q", got, h.stderr.String())
	}

	got = h.mustRun("stack", "ps", "getstartedlab")
	want = strings.Join([]string{
		"ID             NAME                         IMAGE                             NODE      DESIRED STATE   CURRENT STATE                    ERROR                              PORTS",
		"task10a00000   getstartedlab_visualizer.1   dockersamples/visualizer:stable   node1     Running         Preparing about a minute ago                                        ",
		"task1a000000   getstartedlab_web.1          nginx:1.27                        node1     Running         Running 5 seconds ago                                               ",
		"task1b000000    \\_ getstartedlab_web.1      nginx:1.27                        node2     Shutdown        Failed 2 minutes ago             \"task: non-zero exit (1): the …\"   ",
		"task1c000000    \\_ getstartedlab_web.1      nginx:1.27                        node2     Shutdown        Shutdown about an hour ago                                          ",
		"task2a000000   getstartedlab_web.2          nginx:1.27                        node1     Running         Running less than a second ago                                      ",
		"",
	}, "\n")
	if got != want {
		t.Errorf("stack ps:\n%s\nwant:\n%s", got, want)
	}
	if got := h.mustRun("stack", "ps", "-q", "-f", "desired-state=running", "getstartedlab"); got != "task10a00000000000000000000\ntask1a000000000000000000000\ntask2a000000000000000000000\n" {
		t.Errorf("stack ps -q:\n%s", got)
	}
	got = h.mustRun("stack", "ps", "--no-trunc", "--format", "{{.ID}} {{.Error}}", "-f", "desired-state=shutdown", "getstartedlab")
	if got != "task1b000000000000000000000 \"task: non-zero exit (1): the process crashed badly\"\ntask1c000000000000000000000 \n" {
		t.Errorf("stack ps --no-trunc:\n%s", got)
	}
	if code := h.run("stack", "ps", "other"); code != 1 || h.stderr.String() != "Error: nothing found in stack: other\n" {
		t.Errorf("empty stack ps: exit %d stderr %q", code, h.stderr.String())
	}
}

func TestStackRemove(t *testing.T) {
	h := newHarness(t).serve()
	h.fake.removeResp["getstartedlab"] = []string{"Removing service getstartedlab_visualizer", "Removing service getstartedlab_web", "Removing network getstartedlab_webnet"}
	h.fake.removeResp["empty"] = nil

	if got := h.mustRun("stack", "rm", "getstartedlab", "nosuch", "empty"); got != "Removing service getstartedlab_visualizer\nRemoving service getstartedlab_web\nRemoving network getstartedlab_webnet\n" {
		t.Errorf("stack rm stdout:\n%s", got)
	}
	if got := h.stderr.String(); got != "Nothing found in stack: nosuch\nNothing found in stack: empty\n" {
		t.Errorf("stack rm stderr:\n%s", got)
	}
	if code := h.run("stack", "rm", `""`); code != 1 || h.stderr.String() != "Error: invalid stack name: \"\\\"\\\"\"\n" {
		t.Errorf("invalid name: exit %d stderr %q", code, h.stderr.String())
	}
}

// fakeLoader records what stack deploy passes to the compose loader.
type fakeLoader struct {
	name  string
	opts  StackLoadOptions
	spec  *typesv1.StackSpec
	warns []string
	err   error
}

func (l *fakeLoader) load(name string, o StackLoadOptions) (*typesv1.StackSpec, []string, error) {
	l.name, l.opts = name, o
	return l.spec, l.warns, l.err
}

func TestStackDeployDetached(t *testing.T) {
	h := newHarness(t).serve()
	h.env["TAG"] = "1.27"
	loader := &fakeLoader{
		spec:  &typesv1.StackSpec{Name: "getstartedlab"},
		warns: []string{"Ignoring unsupported options: build", "Ignoring deprecated options:\n\ncontainer_name: Setting the container name is not supported."},
	}
	h.configure = func(a *App) { a.LoadStack = loader.load }
	h.fake.deployResp = &controlv1.DeployStackResponse{
		Actions:    []string{"Creating network getstartedlab_webnet", "Creating service getstartedlab_web"},
		ServiceIds: []string{"websvc0000000000000000000"},
	}
	compose := filepath.Join(h.dir, "app", "docker-compose.yml")
	got := h.mustRun("stack", "deploy", "-c", compose, "-c", "-", "--prune", "getstartedlab")
	if got != "Creating network getstartedlab_webnet\nCreating service getstartedlab_web\n" {
		t.Errorf("stdout:\n%s", got)
	}
	wantErr := "Ignoring unsupported options: build\nIgnoring deprecated options:\n\ncontainer_name: Setting the container name is not supported.\n" +
		"Since --detach=false was not specified, tasks will be created in the background.\nIn a future release, --detach=false will become the default.\n"
	if h.stderr.String() != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", h.stderr.String(), wantErr)
	}
	if loader.name != "getstartedlab" || len(loader.opts.Files) != 2 || loader.opts.Files[1] != "-" ||
		loader.opts.WorkingDir != filepath.Join(h.dir, "app") || loader.opts.Env["TAG"] != "1.27" || loader.opts.Stdin == nil {
		t.Errorf("loader got %q %+v", loader.name, loader.opts)
	}
	if d := h.fake.deployed[0]; !d.Prune || d.Stack.Name != "getstartedlab" {
		t.Errorf("deploy request %v", d)
	}

	// An explicit --detach silences the notice.
	h.mustRun("stack", "deploy", "-c", compose, "--detach", "getstartedlab")
	if strings.Contains(h.stderr.String(), "Since --detach=false") {
		t.Errorf("notice printed with explicit --detach:\n%s", h.stderr.String())
	}

	loader.err = errors.New("docker-compose.yml: services.web.deploy.replicas must be a number")
	if code := h.run("stack", "deploy", "-c", compose, "getstartedlab"); code != 1 ||
		!strings.HasSuffix(h.stderr.String(), "Error: docker-compose.yml: services.web.deploy.replicas must be a number\n") {
		t.Errorf("load error: exit %d stderr %q", code, h.stderr.String())
	}
	if code := h.run("stack", "deploy", "getstartedlab"); code != 1 || h.stderr.String() != "Error: specify a Compose file (with --compose-file)\n" {
		t.Errorf("no -c: exit %d stderr %q", code, h.stderr.String())
	}
}

// advanceTasks moves every task one state forward per ListTasks call, the
// way an agent reports NEW → … → RUNNING.
func advanceTasks(f *fakeControl) {
	next := map[typesv1.TaskState]typesv1.TaskState{
		typesv1.TaskState_TASK_STATE_NEW:       typesv1.TaskState_TASK_STATE_PENDING,
		typesv1.TaskState_TASK_STATE_PENDING:   typesv1.TaskState_TASK_STATE_ASSIGNED,
		typesv1.TaskState_TASK_STATE_ASSIGNED:  typesv1.TaskState_TASK_STATE_PREPARING,
		typesv1.TaskState_TASK_STATE_PREPARING: typesv1.TaskState_TASK_STATE_STARTING,
		typesv1.TaskState_TASK_STATE_STARTING:  typesv1.TaskState_TASK_STATE_RUNNING,
	}
	for _, t := range f.tasks {
		if n, ok := next[t.Status.State]; ok {
			t.Status.State = n
		}
	}
}

func TestStackDeployWaitsForConvergence(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	web := h.fake.services[0]
	h.fake.tasks = []*typesv1.Task{
		mkTask("new1", web, 1, "node1id0000000000000000000", typesv1.TaskState_TASK_STATE_NEW, running, 0, 0),
		mkTask("new2", web, 2, "node2id0000000000000000000", typesv1.TaskState_TASK_STATE_NEW, running, 0, 0),
	}
	h.fake.beforeListTasks = advanceTasks
	h.fake.deployResp = &controlv1.DeployStackResponse{
		Actions:    []string{"Creating network getstartedlab_webnet", "Creating service getstartedlab_web"},
		ServiceIds: []string{web.Id},
	}
	loader := &fakeLoader{spec: &typesv1.StackSpec{Name: "getstartedlab"}}
	h.configure = func(a *App) { a.LoadStack = loader.load }

	got := h.mustRun("stack", "deploy", "-c", "docker-compose.yml", "--detach=false", "getstartedlab")
	want := strings.Join([]string{
		"Creating network getstartedlab_webnet",
		"Creating service getstartedlab_web",
		"overall progress: 0 out of 2 tasks",
		"1/2: pending",
		"2/2: pending",
		"1/2: assigned",
		"2/2: assigned",
		"1/2: preparing",
		"2/2: preparing",
		"1/2: starting",
		"2/2: starting",
		"1/2: running",
		"2/2: running",
		"overall progress: 2 out of 2 tasks",
		"verify: Waiting 5 seconds to verify that tasks are stable...",
		"verify: Waiting 4 seconds to verify that tasks are stable...",
		"verify: Waiting 3 seconds to verify that tasks are stable...",
		"verify: Waiting 2 seconds to verify that tasks are stable...",
		"verify: Waiting 1 seconds to verify that tasks are stable...",
		"verify: Service websvc0000000000000000000 converged",
		"",
	}, "\n")
	if got != want {
		t.Errorf("deploy --detach=false:\n%s\nwant:\n%s", got, want)
	}
	if h.stderr.String() != "" {
		t.Errorf("stderr: %s", h.stderr.String())
	}

	// -q keeps the wait but not the display.
	for _, task := range h.fake.tasks {
		task.Status.State = typesv1.TaskState_TASK_STATE_NEW
	}
	if got := h.mustRun("stack", "deploy", "-q", "-c", "docker-compose.yml", "--detach=false", "getstartedlab"); got != "Creating network getstartedlab_webnet\nCreating service getstartedlab_web\n" {
		t.Errorf("-q:\n%s", got)
	}
}

func TestStackDeployProgressOnTerminal(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	web := h.fake.services[0]
	h.fake.tasks = []*typesv1.Task{mkTask("new1", web, 1, "node1id0000000000000000000", typesv1.TaskState_TASK_STATE_STARTING, running, 0, 0)}
	web.Spec.Mode = &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: 1}}
	h.fake.beforeListTasks = advanceTasks
	h.fake.deployResp = &controlv1.DeployStackResponse{ServiceIds: []string{web.Id}}
	loader := &fakeLoader{spec: &typesv1.StackSpec{Name: "getstartedlab"}}
	h.configure = func(a *App) {
		a.LoadStack = loader.load
		a.StdoutIsTerminal = func() bool { return true }
		a.TerminalWidth = func() int { return 120 }
	}
	got := h.mustRun("stack", "deploy", "-c", "docker-compose.yml", "-d=false", "getstartedlab")
	for _, want := range []string{
		"\x1b[2Koverall progress: 0 out of 1 tasks\n",
		"1/1: running   [==================================================>] ",
		"overall progress: 1 out of 1 tasks",
		"verify: Service websvc0000000000000000000 converged",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal progress lacks %q:\n%q", want, got)
		}
	}
}

func TestStackDeployWorkingDirFromStdin(t *testing.T) {
	h := newHarness(t).serve()
	loader := &fakeLoader{spec: &typesv1.StackSpec{Name: "s"}}
	h.configure = func(a *App) {
		a.LoadStack = loader.load
		a.Getwd = func() (string, error) { return "/somewhere", nil }
	}
	h.stdin = "services: {}\n"
	h.mustRun("stack", "deploy", "-c", "-", "s")
	if loader.opts.WorkingDir != "/somewhere" {
		t.Errorf("working dir %q", loader.opts.WorkingDir)
	}
	b := make([]byte, 64)
	n, _ := loader.opts.Stdin.Read(b)
	if string(b[:n]) != "services: {}\n" {
		t.Errorf("stdin %q", b[:n])
	}
}
