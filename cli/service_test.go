package cli

import (
	"strings"
	"testing"
	"time"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// getstartedlab is Docker's "get started" stack: web with 2 replicas, one
// slot restarted after failures, plus a visualizer.
func getstartedlab(h *harness) {
	f := h.fake
	f.nodes = []*typesv1.Node{
		mkNode("node1id0000000000000000000", "node1", typesv1.NodeState_NODE_STATE_READY, typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE,
			&typesv1.ManagerStatus{Leader: true, Reachability: typesv1.Reachability_REACHABILITY_REACHABLE}),
		mkNode("node2id0000000000000000000", "node2", typesv1.NodeState_NODE_STATE_READY, typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN, nil),
		mkNode("node10id000000000000000000", "node10", typesv1.NodeState_NODE_STATE_DOWN, typesv1.NodeAvailability_NODE_AVAILABILITY_ACTIVE,
			&typesv1.ManagerStatus{Reachability: typesv1.Reachability_REACHABILITY_UNREACHABLE}),
	}
	f.info.NodeId = "node1id0000000000000000000"
	web := mkService("websvc0000000000000000000", "getstartedlab_web", "getstartedlab", 2, "docker.io/library/nginx:1.27@sha256:abcdef", port(4000, 80))
	viz := mkService("vizsvc0000000000000000000", "getstartedlab_visualizer", "getstartedlab", 1, "dockersamples/visualizer:stable", port(8080, 8080))
	f.services = []*typesv1.Service{web, viz}
	f.statuses["websvc0000000000000000000"] = &controlv1.ServiceStatus{RunningTasks: 2, DesiredTasks: 2}
	f.statuses["vizsvc0000000000000000000"] = &controlv1.ServiceStatus{RunningTasks: 0, DesiredTasks: 1}
	n1, n2 := "node1id0000000000000000000", "node2id0000000000000000000"
	f.tasks = []*typesv1.Task{
		mkTask("task1a000000000000000000000", web, 1, n1, running, running, 5*time.Second, 10*time.Second),
		mkTask("task1b000000000000000000000", web, 1, n2, failed, shutdown, 2*time.Minute, 3*time.Minute,
			withErr("task: non-zero exit (1): the process crashed badly")),
		mkTask("task1c000000000000000000000", web, 1, n2, shutdown, shutdown, 70*time.Minute, 2*time.Hour),
		mkTask("task2a000000000000000000000", web, 2, n1, running, running, 500*time.Millisecond, time.Minute),
		mkTask("task10a00000000000000000000", viz, 1, n1, typesv1.TaskState_TASK_STATE_PREPARING, running, 61*time.Second, 70*time.Second),
	}
}

func TestServicePsHistoryAndAges(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	got := h.mustRun("service", "ps", "getstartedlab_web")
	want := strings.Join([]string{
		"ID             NAME                      IMAGE        NODE      DESIRED STATE   CURRENT STATE                    ERROR                              PORTS",
		"task1a000000   getstartedlab_web.1       nginx:1.27   node1     Running         Running 5 seconds ago                                               ",
		"task1b000000    \\_ getstartedlab_web.1   nginx:1.27   node2     Shutdown        Failed 2 minutes ago             \"task: non-zero exit (1): the …\"   ",
		"task1c000000    \\_ getstartedlab_web.1   nginx:1.27   node2     Shutdown        Shutdown about an hour ago                                          ",
		"task2a000000   getstartedlab_web.2       nginx:1.27   node1     Running         Running less than a second ago                                      ",
		"",
	}, "\n")
	if got != want {
		t.Errorf("service ps:\n%s\nwant:\n%s", got, want)
	}
}

func TestServicePsNoTruncQuietFormat(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)

	got := h.mustRun("service", "ps", "--no-trunc", "websvc")
	if !strings.Contains(got, "task1b000000000000000000000") || !strings.Contains(got, `"task: non-zero exit (1): the process crashed badly"`) {
		t.Errorf("--no-trunc keeps ids and errors whole:\n%s", got)
	}
	if !strings.Contains(got, "docker.io/library/nginx:1.27@sha256:abcdef") {
		t.Errorf("--no-trunc keeps the image digest:\n%s", got)
	}

	got = h.mustRun("service", "ps", "-q", "getstartedlab_web")
	want := "task1a000000000000000000000\ntask1b000000000000000000000\ntask1c000000000000000000000\ntask2a000000000000000000000\n"
	if got != want {
		t.Errorf("-q prints full ids in display order:\n%s\nwant:\n%s", got, want)
	}

	// Only tables indent history rows.
	got = h.mustRun("service", "ps", "--format", "{{.Name}} {{.CurrentState}}", "getstartedlab_web")
	want = "getstartedlab_web.1 Running 5 seconds ago\ngetstartedlab_web.1 Failed 2 minutes ago\ngetstartedlab_web.1 Shutdown about an hour ago\ngetstartedlab_web.2 Running less than a second ago\n"
	if got != want {
		t.Errorf("--format:\n%s\nwant:\n%s", got, want)
	}

	got = h.mustRun("service", "ps", "--format", `table {{.ID}}\t{{.Name}}`, "-f", "desired-state=running", "getstartedlab_web")
	want = "ID             NAME\ntask1a000000   getstartedlab_web.1\ntask2a000000   getstartedlab_web.2\n"
	if got != want {
		t.Errorf("table format with desired-state filter:\n%s\nwant:\n%s", got, want)
	}

	got = h.mustRun("service", "ps", "--format", "json", "-f", "desired-state=running", "getstartedlab_visualizer")
	want = `{"CurrentState":"Preparing about a minute ago","DesiredState":"Running","Error":"","ID":"task10a00000","Image":"dockersamples/visualizer:stable","Name":"getstartedlab_visualizer.1","Node":"node1","Ports":""}` + "\n"
	if got != want {
		t.Errorf("--format json:\n%s\nwant:\n%s", got, want)
	}
}

func TestServicePsErrors(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)

	if code := h.run("service", "ps", "nosuch"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if got := h.stderr.String(); got != "Error: no such service: nosuch\n" {
		t.Errorf("stderr %q", got)
	}

	// Found services are listed, the missing one is reported after.
	if code := h.run("service", "ps", "-q", "getstartedlab_visualizer", "nosuch"); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if h.stdout.String() != "task10a00000000000000000000\n" || h.stderr.String() != "Error: no such service: nosuch\n" {
		t.Errorf("stdout %q stderr %q", h.stdout.String(), h.stderr.String())
	}

	if code := h.run("service", "ps", "-f", "color=blue", "getstartedlab_web"); code != 1 || h.stderr.String() != "Error: invalid filter 'color'\n" {
		t.Errorf("bad filter: exit %d stderr %q", code, h.stderr.String())
	}

	if code := h.run("service", "ps"); code != 1 {
		t.Errorf("missing argument: exit %d", code)
	}
	if !strings.HasPrefix(h.stderr.String(), "shoal: 'shoal service ps' requires at least 1 argument\n\nUsage:  shoal service ps [OPTIONS] SERVICE [SERVICE...]") {
		t.Errorf("usage error %q", h.stderr.String())
	}

	if code := h.run("service", "ps", "--bogus", "x"); code != 125 {
		t.Errorf("flag error: exit %d, want 125", code)
	}
	if !strings.HasPrefix(h.stderr.String(), "unknown flag: --bogus\n\nUsage:  shoal service ps") {
		t.Errorf("flag error %q", h.stderr.String())
	}
}

func TestServiceList(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	global := mkService("globsvc000000000000000000", "monitor", "", 0, "prom/node-exporter")
	global.Spec.Mode = &typesv1.ServiceSpec_Global{Global: &typesv1.GlobalService{}}
	h.fake.services = append(h.fake.services, global)
	h.fake.statuses[global.Id] = &controlv1.ServiceStatus{RunningTasks: 3, DesiredTasks: 3}
	ranged := mkService("rangesvc00000000000000000", "dns", "", 1, "coredns/coredns:1.11",
		port(54, 53), port(53, 53), &typesv1.PortConfig{PublishedPort: 53, TargetPort: 53, Protocol: typesv1.PortConfig_PROTOCOL_UDP},
		&typesv1.PortConfig{PublishedPort: 9153, TargetPort: 9153, PublishMode: typesv1.PortConfig_PUBLISH_MODE_HOST})
	h.fake.services = append(h.fake.services, ranged)

	got := h.mustRun("service", "ls")
	want := strings.Join([]string{
		"ID             NAME                       MODE         REPLICAS   IMAGE                             PORTS",
		"rangesvc0000   dns                        replicated   0/0        coredns/coredns:1.11              *:53-54->53/tcp, *:53->53/udp",
		"vizsvc000000   getstartedlab_visualizer   replicated   0/1        dockersamples/visualizer:stable   *:8080->8080/tcp",
		"websvc000000   getstartedlab_web          replicated   2/2        nginx:1.27                        *:4000->80/tcp",
		"globsvc00000   monitor                    global       3/3        prom/node-exporter                ",
		"",
	}, "\n")
	if got != want {
		t.Errorf("service ls:\n%s\nwant:\n%s", got, want)
	}

	got = h.mustRun("service", "ls", "-q")
	if got != "rangesvc0000\nvizsvc000000\nwebsvc000000\nglobsvc00000\n" {
		t.Errorf("service ls -q:\n%s", got)
	}
	got = h.mustRun("service", "ls", "--format", "{{.Name}}: {{.Replicas}}")
	if got != "dns: 0/0\ngetstartedlab_visualizer: 0/1\ngetstartedlab_web: 2/2\nmonitor: 3/3\n" {
		t.Errorf("service ls --format:\n%s", got)
	}
}

func TestServiceInspect(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)

	got := h.mustRun("service", "inspect", "getstartedlab_web")
	if !strings.HasPrefix(got, "[\n    {\n        \"id\": \"websvc0000000000000000000\",") || !strings.HasSuffix(got, "    }\n]\n") {
		t.Errorf("inspect JSON:\n%s", got)
	}
	if !strings.Contains(got, `"image": "docker.io/library/nginx:1.27@sha256:abcdef"`) {
		t.Errorf("inspect JSON lacks the image:\n%s", got)
	}

	// Go field names, and JSON keys as a fallback, as docker does.
	if got := h.mustRun("service", "inspect", "-f", "{{.Spec.Annotations.Name}} {{.GetSpec.GetReplicated.GetReplicas}}", "websvc"); got != "getstartedlab_web 2\n" {
		t.Errorf("inspect -f Go names: %q", got)
	}
	if got := h.mustRun("service", "inspect", "--format", "{{.spec.annotations.name}}", "websvc"); got != "getstartedlab_web\n" {
		t.Errorf("inspect -f JSON keys: %q", got)
	}

	got = h.mustRun("service", "inspect", "--pretty", "getstartedlab_web")
	for _, want := range []string{"\nID:\t\twebsvc0000000000000000000\n", "Name:\t\tgetstartedlab_web\n", "Service Mode:\tReplicated\n Replicas:\t2\n",
		" Image:\t\tdocker.io/library/nginx:1.27@sha256:abcdef\n", "Endpoint Mode:\tvip\n", " PublishedPort = 4000\n  Protocol = tcp\n  TargetPort = 80\n  PublishMode = ingress"} {
		if !strings.Contains(got, want) {
			t.Errorf("inspect --pretty lacks %q:\n%s", want, got)
		}
	}

	if code := h.run("service", "inspect", "getstartedlab_web", "nosuch"); code != 1 {
		t.Errorf("exit %d", code)
	}
	if !strings.Contains(h.stdout.String(), `"websvc0000000000000000000"`) || h.stderr.String() != "Error: no such service: nosuch\n" {
		t.Errorf("partial inspect: stdout %q stderr %q", h.stdout.String(), h.stderr.String())
	}
}

func TestServiceScaleAndRemove(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	global := mkService("globsvc000000000000000000", "monitor", "", 0, "prom/node-exporter")
	global.Spec.Mode = &typesv1.ServiceSpec_Global{Global: &typesv1.GlobalService{}}
	h.fake.services = append(h.fake.services, global)

	if got := h.mustRun("service", "scale", "getstartedlab_web=5", "getstartedlab_visualizer=0"); got != "getstartedlab_web scaled to 5\ngetstartedlab_visualizer scaled to 0\n" {
		t.Errorf("scale: %q", got)
	}
	if len(h.fake.scaled) != 2 || h.fake.scaled[0].Replicas != 5 || h.fake.scaled[0].Ref != "getstartedlab_web" {
		t.Errorf("scale requests: %v", h.fake.scaled)
	}
	if code := h.run("service", "scale", "monitor=2", "nosuch=1", "web=x"); code != 1 {
		t.Errorf("exit %d", code)
	}
	want := "Error: monitor: scale can only be used with replicated mode\nnosuch: no such service: nosuch\nweb: invalid replicas value x: must be a non-negative number\n"
	if h.stderr.String() != want {
		t.Errorf("scale errors:\n%s\nwant:\n%s", h.stderr.String(), want)
	}
	if code := h.run("service", "scale", "web"); code != 1 || !strings.HasPrefix(h.stderr.String(), "invalid scale specifier 'web'.\nSee 'shoal service scale --help'.") {
		t.Errorf("bad specifier: exit %d %q", code, h.stderr.String())
	}

	if code := h.run("service", "rm", "getstartedlab_web", "nosuch"); code != 1 {
		t.Errorf("exit %d", code)
	}
	if h.stdout.String() != "getstartedlab_web\n" || h.stderr.String() != "Error: no such service: nosuch\n" {
		t.Errorf("rm: stdout %q stderr %q", h.stdout.String(), h.stderr.String())
	}
}

func TestServiceLogs(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	h.fake.services[0].Spec.Mode = &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: 10}}
	at := epoch.Add(-time.Minute).UnixNano()
	h.fake.logs = []*controlv1.LogMessage{
		{TaskId: "task1a000000000000000000000", TaskName: "getstartedlab_web.1", NodeId: "node1id0000000000000000000", Stream: "stdout", Line: []byte("GET / 200\n"), TimeUnixNano: at},
		{TaskId: "task2a000000000000000000000", TaskName: "getstartedlab_web.10", NodeId: "node2id0000000000000000000", Stream: "stderr", Line: []byte("warning: slow"), TimeUnixNano: at},
	}
	got := h.mustRun("service", "logs", "--tail", "5", "--since", "10m", "-t", "getstartedlab_web")
	if want := "2025-06-01T11:59:00.000000000Z getstartedlab_web.1.task1a000000@node1     | GET / 200\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if want := "2025-06-01T11:59:00.000000000Z getstartedlab_web.10.task2a000000@node2    | warning: slow\n"; h.stderr.String() != want {
		t.Errorf("stderr %q, want %q", h.stderr.String(), want)
	}
	req := h.fake.logReqs[0]
	if req.Tail != 5 || !req.Timestamps || req.SinceUnixNano != epoch.Add(-10*time.Minute).UnixNano() {
		t.Errorf("request %v", req)
	}

	got = h.mustRun("service", "logs", "--raw", "getstartedlab_web")
	if got != "GET / 200\n" {
		t.Errorf("--raw: %q", got)
	}
	if code := h.run("service", "logs", "nosuch"); code != 1 || h.stderr.String() != "Error: no such task or service: nosuch\n" {
		t.Errorf("exit %d stderr %q", code, h.stderr.String())
	}
	if code := h.run("service", "logs", "--since", "yesterday", "web"); code != 1 || !strings.Contains(h.stderr.String(), `invalid value for "since"`) {
		t.Errorf("exit %d stderr %q", code, h.stderr.String())
	}
}
