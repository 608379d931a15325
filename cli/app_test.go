package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
)

func TestConnectionRefused(t *testing.T) {
	h := newHarness(t) // nothing listens on h.sock
	for _, args := range [][]string{{"service", "ls"}, {"node", "ls"}, {"service", "rm", "a", "b"}, {"stack", "rm", "x"}} {
		if code := h.run(args...); code != 1 {
			t.Errorf("%v: exit %d", args, code)
		}
		want := "Cannot connect to the shoal manager at unix://" + h.sock + ". Is the manager running? " +
			"(start it with `shoal swarm init`, or `shoal-manager --data-dir …` after a reboot)\n"
		if h.stderr.String() != want {
			t.Errorf("%v: stderr %q, want %q", args, h.stderr.String(), want)
		}
	}
}

func TestHostFlagAndDefault(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "SHOAL_HOST")
	h.run("service", "ls")
	if !strings.Contains(h.stderr.String(), "at unix:///run/shoal/shoal.sock.") && !strings.Contains(h.stderr.String(), "permission denied") {
		t.Errorf("default host: %q", h.stderr.String())
	}
	h.serve()
	if code := h.run("-H", "unix://"+h.sock, "service", "ls", "-q"); code != 0 {
		t.Errorf("-H: exit %d %s", code, h.stderr.String())
	}
	if code := h.run("-H", "ssh://host", "service", "ls"); code != 1 || h.stderr.String() != "Error: invalid host \"ssh://host\": only unix:// and tcp:// are supported\n" {
		t.Errorf("bad host: %d %q", code, h.stderr.String())
	}
}

func TestParseHost(t *testing.T) {
	for in, want := range map[string]endpoint{
		"unix:///run/shoal/shoal.sock": {"unix", "/run/shoal/shoal.sock"},
		"tcp://10.0.0.1:2377":          {"tcp", "10.0.0.1:2377"},
		"tcp://manager1":               {"tcp", "manager1:2377"},
		"manager1:4000":                {"tcp", "manager1:4000"},
		"/tmp/s.sock":                  {"unix", "/tmp/s.sock"},
	} {
		got, err := parseHost(in)
		if err != nil || got != want {
			t.Errorf("parseHost(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// statusFake makes every call fail with one status, to check the mapping.
type statusFake struct {
	*fakeControl
	err error
}

func (s *statusFake) ListServices(context.Context, *controlv1.ListServicesRequest) (*controlv1.ListServicesResponse, error) {
	return nil, s.err
}

func TestErrorMapping(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unavailable, "no leader elected yet"), "Error: no leader elected yet\n"},
		{status.Error(codes.FailedPrecondition, "this node is not a swarm manager"), "Error: this node is not a swarm manager\n"},
		{status.Error(codes.Unimplemented, "method ListServices not implemented"), "Error: not implemented by this manager yet\n"},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "Error: timed out waiting for the manager\n"},
		{status.Error(codes.Internal, ""), "Error: internal\n"},
	} {
		h := newHarness(t)
		srv := newServerFor(t, h.sock, &statusFake{fakeControl: newFakeControl(), err: tc.err})
		if code := h.run("service", "ls"); code != 1 || h.stderr.String() != tc.want {
			t.Errorf("%v: exit %d stderr %q, want %q", tc.err, code, h.stderr.String(), tc.want)
		}
		srv.Stop()
	}
}

func TestUsageErrors(t *testing.T) {
	h := newHarness(t)
	if code := h.run("bogus"); code != 1 || h.stderr.String() != "shoal: 'bogus' is not a shoal command.\nSee 'shoal --help'\n" {
		t.Errorf("unknown command: %d %q", code, h.stderr.String())
	}
	if code := h.run("service", "bogus"); code != 1 || !strings.HasPrefix(h.stderr.String(), "shoal: unknown command: shoal service bogus\n\nUsage:  shoal service") {
		t.Errorf("unknown subcommand: %d %q", code, h.stderr.String())
	}
	if code := h.run("service"); code != 0 || !strings.Contains(h.stdout.String(), "Available Commands:") {
		t.Errorf("bare group shows help: %d %q", code, h.stdout.String())
	}
	if code := h.run("stack", "ps", "a", "b"); code != 1 || !strings.HasPrefix(h.stderr.String(), "shoal: 'shoal stack ps' requires 1 argument\n\nUsage:  shoal stack ps [OPTIONS] STACK\n") {
		t.Errorf("too many args: %d %q", code, h.stderr.String())
	}
	if code := h.run("--log-level", "loud", "version"); code != 1 || h.stderr.String() != "Unable to parse logging level: loud\n" {
		t.Errorf("bad log level: %d %q", code, h.stderr.String())
	}
}

func TestVersion(t *testing.T) {
	h := newHarness(t)
	if code := h.run("version"); code != 1 || !strings.HasPrefix(h.stdout.String(), "Client:\n Version:           "+Version+"\n") ||
		!strings.HasPrefix(h.stderr.String(), "Cannot connect to the shoal manager") {
		t.Errorf("version without manager: %d %q %q", code, h.stdout.String(), h.stderr.String())
	}
	h.serve()
	if got := h.mustRun("version"); !strings.Contains(got, "\nServer:\n Version:           0.1.0\n") {
		t.Errorf("version:\n%s", got)
	}
	if got := h.mustRun("--version"); got != "shoal version "+Version+", build "+GitCommit+"\n" {
		t.Errorf("--version: %q", got)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "Less than a second",
		time.Second:                    "1 second",
		5 * time.Second:                "5 seconds",
		time.Minute + 30*time.Second:   "About a minute",
		2 * time.Minute:                "2 minutes",
		70 * time.Minute:               "About an hour",
		3 * time.Hour:                  "3 hours",
		50 * time.Hour:                 "2 days",
		20 * 24 * time.Hour:            "2 weeks",
		90 * 24 * time.Hour:            "3 months",
		3 * 365 * 24 * time.Hour:       "3 years",
		time.Hour + 29*time.Minute + 1: "About an hour",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestNaturalLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"web.2", "web.10", true},
		{"web.10", "web.2", false},
		{"node1", "node10", true},
		{"a", "b", true},
		{"web.1", "web.1", false},
		{"web", "web.1", true},
	} {
		if got := naturalLess(tc.a, tc.b); got != tc.less {
			t.Errorf("naturalLess(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

func TestFamiliarImage(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/nginx:1.27@sha256:abc": "nginx:1.27",
		"nginx":                         "nginx",
		"registry:5000/app:v1@sha256:x": "registry:5000/app:v1",
		"registry:5000/app@sha256:x":    "registry:5000/app@sha256:x",
		"docker.io/dockersamples/viz":   "dockersamples/viz",
	} {
		if got := familiarImage(in); got != want {
			t.Errorf("familiarImage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTemplateHelpers(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)
	got := h.mustRun("service", "ls", "--format", `table {{upper .Name}}\t{{title .Mode}}\t{{truncate .ID 4}}\t{{json .Replicas}}`)
	want := "NAME                       MODE         ID        REPLICAS\nGETSTARTEDLAB_VISUALIZER   Replicated   vizs      \"0/1\"\nGETSTARTEDLAB_WEB          Replicated   webs      \"2/2\"\n"
	if got != want {
		t.Errorf("helpers:\n%s\nwant:\n%s", got, want)
	}
	if code := h.run("service", "ls", "--format", "{{.Nope"); code != 1 || !strings.HasPrefix(h.stderr.String(), "Error: template parsing error: ") {
		t.Errorf("bad template: %d %q", code, h.stderr.String())
	}
}
