package cli

import (
	"strings"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestNodeList(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)

	got := h.mustRun("node", "ls")
	want := strings.Join([]string{
		"ID                             HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION",
		"node1id0000000000000000000 *   node1      Ready     Active         Leader           0.1.0",
		"node2id0000000000000000000     node2      Ready     Drain                           0.1.0",
		"node10id000000000000000000     node10     Down      Active         Unreachable      0.1.0",
		"",
	}, "\n")
	if got != want {
		t.Errorf("node ls:\n%s\nwant:\n%s", got, want)
	}

	if got := h.mustRun("node", "ls", "-q"); got != "node1id0000000000000000000\nnode2id0000000000000000000\nnode10id000000000000000000\n" {
		t.Errorf("node ls -q:\n%s", got)
	}
	if got := h.mustRun("node", "ls", "--format", "{{.Hostname}} {{.Self}} {{.ManagerStatus}}"); got != "node1 true Leader\nnode2 false \nnode10 false Unreachable\n" {
		t.Errorf("node ls --format:\n%q", got)
	}
	got = h.mustRun("node", "ls", "--format", "json")
	if !strings.HasPrefix(got, `{"Availability":"Active","EngineVersion":"0.1.0","Hostname":"node1","ID":"node1id0000000000000000000","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Unknown"}`) {
		t.Errorf("node ls --format json:\n%s", got)
	}
}

func TestNodeInspectAndUpdate(t *testing.T) {
	h := newHarness(t).serve()
	getstartedlab(h)

	got := h.mustRun("node", "inspect", "self")
	if !strings.Contains(got, `"id": "node1id0000000000000000000"`) || !strings.Contains(got, `"availability": "NODE_AVAILABILITY_ACTIVE"`) {
		t.Errorf("node inspect:\n%s", got)
	}
	got = h.mustRun("node", "inspect", "--pretty", "node2")
	for _, want := range []string{"ID:\t\t\tnode2id0000000000000000000\n", "Hostname:              \tnode2\n", " State:\t\t\tReady\n", " Availability:         \tDrain\n", " Operating System:\tlinux\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("node inspect --pretty lacks %q:\n%s", want, got)
		}
	}
	if code := h.run("node", "inspect", "nosuch"); code != 1 || h.stderr.String() != "Error: no such node: nosuch\n" {
		t.Errorf("exit %d stderr %q", code, h.stderr.String())
	}

	if got := h.mustRun("node", "update", "--availability", "drain", "--label-add", "zone=a", "--label-add", "ssd", "node1"); got != "node1\n" {
		t.Errorf("node update printed %q", got)
	}
	req := h.fake.updated[0]
	if req.NodeId != "node1id0000000000000000000" || req.Version != 7 || req.Spec.Availability != typesv1.NodeAvailability_NODE_AVAILABILITY_DRAIN ||
		req.Spec.Annotations.Labels["zone"] != "a" || req.Spec.Annotations.Labels["ssd"] != "" || len(req.Spec.Annotations.Labels) != 2 {
		t.Errorf("update request %v", req)
	}
	if code := h.run("node", "update", "--label-rm", "nolabel", "node1"); code != 1 || h.stderr.String() != "Error: key nolabel doesn't exist in node's labels\n" {
		t.Errorf("label-rm: exit %d stderr %q", code, h.stderr.String())
	}
	if code := h.run("node", "update", "--availability", "sleepy", "node1"); code != 1 ||
		h.stderr.String() != "Error: invalid availability \"sleepy\", only active, pause and drain are supported\n" {
		t.Errorf("bad availability: exit %d stderr %q", code, h.stderr.String())
	}
	if got := h.mustRun("node", "promote", "node2"); got != "Node node2 promoted to a manager in the swarm.\n" {
		t.Errorf("promote: %q", got)
	}
}
