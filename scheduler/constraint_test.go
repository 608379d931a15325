package scheduler

import (
	"errors"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestConstraintMatches(t *testing.T) {
	worker := node("wid1", withHostname("Worker-1"), withLabels("zone", "eu-1", "Disk", "ssd"),
		withAddr("10.0.1.7:2377"))
	manager := node("mid1", asManager(), withHostname("mgr"), withPlatform("linux", "arm64"),
		withAddr("192.168.0.2"))
	bare := &typesv1.Node{Id: "bare"} // no spec, description or status at all

	for _, tc := range []struct {
		expr string
		node *typesv1.Node
		want bool
	}{
		{"node.id==wid1", worker, true},
		{"node.id!=wid1", worker, false},
		{"node.id==WID1", worker, true}, // Docker compares values case-insensitively

		{"node.hostname==worker-1", worker, true},
		{"node.hostname==WORKER-1", worker, true},
		{"node.hostname!=worker-1", worker, false},
		{"node.hostname==mgr", worker, false},
		{"node.hostname!=x", bare, true},
		{"node.hostname==x", bare, false},

		{"node.role==worker", worker, true},
		{"node.role==manager", worker, false},
		{"node.role==Manager", manager, true},
		{"node.role!=manager", manager, false},
		{"node.role==worker", bare, true}, // the zero role is worker

		{"node.platform.os==linux", worker, true},
		{"node.platform.os==windows", worker, false},
		{"node.platform.arch==arm64", manager, true},
		{"node.platform.arch!=arm64", worker, true},
		{"node.platform.arch==amd64", bare, false},

		{"node.labels.zone==eu-1", worker, true},
		{"node.labels.zone==EU-1", worker, true},
		{"node.labels.zone==eu-2", worker, false},
		{"node.labels.zone!=eu-2", worker, true},
		{"node.labels.zone!=eu-1", worker, false},
		// A node without the label: == fails, != matches.
		{"node.labels.zone==eu-1", manager, false},
		{"node.labels.zone!=eu-1", manager, true},
		{"node.labels.zone!=eu-1", bare, true},
		// The prefix is case-insensitive, the label name is not.
		{"NODE.LABELS.zone==eu-1", worker, true},
		{"node.labels.ZONE==eu-1", worker, false},
		{"node.labels.Disk==SSD", worker, true},
		{"engine.labels.zone==eu-1", worker, true},
		{"engine.labels.zone!=eu-1", manager, true},

		{"node.ip==10.0.1.7", worker, true},
		{"node.ip!=10.0.1.7", worker, false},
		{"node.ip==10.0.0.0/16", worker, true},
		{"node.ip!=10.0.0.0/16", manager, true},
		{"node.ip==192.168.0.0/24", manager, true},
		{"node.ip==10.0.0.0/8", bare, false},
		{"node.ip!=10.0.0.0/8", bare, true},

		{"  node.role  ==  worker ", worker, true}, // spaces around key and value
	} {
		c, err := ParseConstraint(tc.expr)
		if err != nil {
			t.Errorf("ParseConstraint(%q): %v", tc.expr, err)
			continue
		}
		if got := c.Matches(tc.node); got != tc.want {
			t.Errorf("%q on node %s = %v, want %v", tc.expr, tc.node.Id, got, tc.want)
		}
	}
}

func TestNodeMatchesAll(t *testing.T) {
	n := node("n", withLabels("zone", "a", "tier", "web"))
	cs, err := ParseConstraints([]string{"node.labels.zone==a", "node.labels.tier!=db", "node.role==worker"})
	if err != nil {
		t.Fatal(err)
	}
	if !NodeMatches(cs, n) {
		t.Error("all constraints hold but NodeMatches is false")
	}
	cs2, _ := ParseConstraints([]string{"node.labels.zone==a", "node.labels.tier==db"})
	if NodeMatches(cs2, n) {
		t.Error("one constraint fails but NodeMatches is true")
	}
	if !NodeMatches(nil, n) {
		t.Error("no constraints should match every node")
	}
}

func TestParseConstraintsErrors(t *testing.T) {
	for _, tc := range []struct {
		expr, want string
	}{
		{"node.role=manager", `invalid constraint "node.role=manager": expected == or !=`},
		{"node.role", `invalid constraint "node.role": expected == or !=`},
		{"node.labels.a<3", `invalid constraint "node.labels.a<3": expected == or !=`},
		{"==worker", `invalid constraint "==worker": invalid key ""`},
		{"node role==worker", `invalid constraint "node role==worker": invalid key "node role"`},
		{"node.labels.zone==", `invalid constraint "node.labels.zone==": invalid value ""`},
		{"node.labels.zone==a==b", `invalid constraint "node.labels.zone==a==b": invalid value "a==b"`},
		{"node.labels.zone==a!b", `invalid constraint "node.labels.zone==a!b": invalid value "a!b"`},
		{"node.role==boss", `invalid constraint "node.role==boss": node.role is manager or worker, not "boss"`},
		{"node.ip==10.0.0", `invalid constraint "node.ip==10.0.0": node.ip is an IP address or a CIDR subnet, not "10.0.0"`},
		{"node.labels.==x", `invalid constraint "node.labels.==x": unknown key "node.labels." (want node.id, node.hostname, node.ip, node.role, node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>)`},
		{"node.name==x", `invalid constraint "node.name==x": unknown key "node.name" (want node.id, node.hostname, node.ip, node.role, node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>)`},
	} {
		_, err := ParseConstraints([]string{"node.role==worker", tc.expr})
		if err == nil {
			t.Errorf("ParseConstraints(%q) succeeded", tc.expr)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("ParseConstraints(%q):\n got %s\nwant %s", tc.expr, err, tc.want)
		}
		if !errors.Is(err, ErrInvalidConstraint) {
			t.Errorf("ParseConstraints(%q) error is not ErrInvalidConstraint", tc.expr)
		}
	}
}

func TestParseConstraintKeepsWhatWasWritten(t *testing.T) {
	cs, err := ParseConstraints([]string{"node.labels.Zone != eu-1", "node.role==manager"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cs[0]; got.Key != "node.labels.Zone" || got.Operator != OpNotEqual || got.Value != "eu-1" || got.String() != "node.labels.Zone!=eu-1" {
		t.Errorf("parsed %+v (%s)", got, got)
	}
	if got := cs[1].String(); got != "node.role==manager" {
		t.Errorf("String() = %q", got)
	}
	if cs, err := ParseConstraints(nil); cs != nil || err != nil {
		t.Errorf("ParseConstraints(nil) = %v, %v", cs, err)
	}
}

func TestParsePreferences(t *testing.T) {
	ps, err := ParsePreferences([]string{"spread=node.labels.zone", "Spread = engine.labels.Rack"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Label != "zone" || ps[0].Descriptor != "node.labels.zone" || ps[1].Label != "Rack" {
		t.Errorf("parsed %+v", ps)
	}
	for _, tc := range []struct{ pref, want string }{
		{"node.labels.zone", `invalid placement preference "node.labels.zone": expected spread=node.labels.<name>`},
		{"binpack=node.labels.zone", `invalid placement preference "binpack=node.labels.zone": expected spread=node.labels.<name>`},
		{"spread=node.hostname", `invalid placement preference "spread=node.hostname": spread takes node.labels.<name>, not "node.hostname"`},
		{"spread=node.labels.", `invalid placement preference "spread=node.labels.": spread takes node.labels.<name>, not "node.labels."`},
	} {
		_, err := ParsePreferences([]string{tc.pref})
		if err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalidPreference) {
			t.Errorf("ParsePreferences(%q) = %v, want %s", tc.pref, err, tc.want)
		}
	}
}
