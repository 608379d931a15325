package dns

import (
	"net"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

// tableView is a table as plain data, for comparisons.
type tableView map[string]struct {
	addrs []string
	ttl   uint32
}

func viewOf(t *table) tableView {
	v := tableView{}
	for name, e := range t.names {
		var addrs []string
		for _, ip := range slices.Concat(e.v4, e.v6) {
			addrs = append(addrs, ip.String())
		}
		v[name] = struct {
			addrs []string
			ttl   uint32
		}{addrs, e.ttl}
	}
	return v
}

func TestBuildTable(t *testing.T) {
	t.Parallel()
	type want = map[string][]string // name → addresses; TTL checked by rule
	tests := []struct {
		name     string
		recs     []Record
		want     want
		problems int
	}{
		{
			name: "vip",
			recs: []Record{webRecord()},
			want: want{
				"web.":                     {"10.0.1.2"},
				"getstartedlab_web.":       {"10.0.1.2"},
				"tasks.web.":               {"10.0.1.3", "10.0.1.4", "10.0.1.5"},
				"tasks.getstartedlab_web.": {"10.0.1.3", "10.0.1.4", "10.0.1.5"},
			},
		},
		{
			name: "dnsrr without running tasks still has its names",
			recs: []Record{{Names: []string{"db"}}},
			want: want{"db.": nil, "tasks.db.": nil},
		},
		{
			name: "names are canonical: lower case, trailing dot",
			recs: []Record{{Names: []string{"Web.", "APP"}, VIP: net.ParseIP("10.0.1.2")}},
			want: want{"web.": {"10.0.1.2"}, "tasks.web.": nil, "app.": {"10.0.1.2"}, "tasks.app.": nil},
		},
		{
			name: "an alias shared by two services answers both",
			recs: []Record{
				{Names: []string{"a", "shared"}, VIP: net.ParseIP("10.0.1.2"), Tasks: ips("10.0.1.3")},
				{Names: []string{"b", "shared"}, VIP: net.ParseIP("10.0.1.12"), Tasks: ips("10.0.1.13")},
			},
			want: want{
				"a.": {"10.0.1.2"}, "tasks.a.": {"10.0.1.3"},
				"b.": {"10.0.1.12"}, "tasks.b.": {"10.0.1.13"},
				"shared.": {"10.0.1.2", "10.0.1.12"}, "tasks.shared.": {"10.0.1.3", "10.0.1.13"},
			},
		},
		{
			name: "duplicates and v4-in-v6 collapse; v6 apart",
			recs: []Record{{Names: []string{"x"}, Tasks: ips("10.0.1.3", "::ffff:10.0.1.3", "10.0.1.3", "fd00::1")}},
			want: want{"x.": {"10.0.1.3", "fd00::1"}, "tasks.x.": {"10.0.1.3", "fd00::1"}},
		},
		{
			name: "another network's record is skipped",
			recs: []Record{{Network: "net2", Names: []string{"x"}, VIP: net.ParseIP("10.0.2.2")}, webRecord()},
			want: want{
				"web.":                     {"10.0.1.2"},
				"getstartedlab_web.":       {"10.0.1.2"},
				"tasks.web.":               {"10.0.1.3", "10.0.1.4", "10.0.1.5"},
				"tasks.getstartedlab_web.": {"10.0.1.3", "10.0.1.4", "10.0.1.5"},
			},
			problems: 1,
		},
		{
			name: "invalid names and addresses are skipped",
			recs: []Record{
				{Names: []string{"", ".", strings.Repeat("a", 64), "ok"}, Tasks: []net.IP{{1, 2, 3}, net.IPv4zero, net.ParseIP("10.0.1.3")}},
				{Names: []string{"badvip"}, VIP: net.IP{1}},
			},
			want:     want{"ok.": {"10.0.1.3"}, "tasks.ok.": {"10.0.1.3"}},
			problems: 6,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, problems := buildTable("net1", tt.recs)
			if len(problems) != tt.problems {
				t.Errorf("problems %q, want %d", problems, tt.problems)
			}
			got := viewOf(tbl)
			if len(got) != len(tt.want) {
				t.Errorf("names %v, want %v", got, tt.want)
			}
			for name, addrs := range tt.want {
				g, ok := got[name]
				if !ok {
					t.Errorf("no %q", name)
					continue
				}
				if !slices.Equal(g.addrs, addrs) {
					t.Errorf("%s: %v, want %v", name, g.addrs, addrs)
				}
			}
		})
	}
}

// TestTTLs: a VIP is cached like Docker's (600 s); task addresses are not
// cached at all; a name that is a VIP for one service and task addresses
// for another takes the shorter.
func TestTTLs(t *testing.T) {
	t.Parallel()
	tbl, _ := buildTable("net1", []Record{
		webRecord(),
		dbRecord(),
		{Names: []string{"mixed"}, VIP: net.ParseIP("10.0.1.50")},
		{Names: []string{"mixed"}, Tasks: ips("10.0.1.51")},
	})
	for name, want := range map[string]uint32{
		"web.": vipTTL, "tasks.web.": taskTTL, "db.": taskTTL, "tasks.db.": taskTTL, "mixed.": taskTTL,
	} {
		if got := tbl.lookup(name).ttl; got != want {
			t.Errorf("%s: TTL %d, want %d", name, got, want)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	tbl, _ := buildTable("net1", []Record{webRecord()})
	for _, name := range []string{"web.", "WEB.", "Web.", "web", "tasks.WEB."} {
		if tbl.lookup(name) == nil {
			t.Errorf("lookup(%q) = nil", name)
		}
	}
	for _, name := range []string{"we.", "web.local.", "tasks.", "tasks.tasks.web."} {
		if tbl.lookup(name) != nil {
			t.Errorf("lookup(%q) found an entry", name)
		}
	}
	var none *table
	if none.lookup("web.") != nil {
		t.Error("nil table found a name")
	}
}

func TestAnswerRotates(t *testing.T) {
	t.Parallel()
	tbl, _ := buildTable("net1", []Record{webRecord()})
	e := tbl.lookup("tasks.web.")
	q := mdns.Question{Name: "Tasks.Web.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET}
	var got [][]string
	for range 4 {
		var order []string
		for _, rr := range e.answer(q) {
			if rr.Header().Name != q.Name {
				t.Fatalf("answer owner %q, want the question's %q", rr.Header().Name, q.Name)
			}
			order = append(order, rr.(*mdns.A).A.String())
		}
		got = append(got, order)
	}
	want := [][]string{
		{"10.0.1.3", "10.0.1.4", "10.0.1.5"},
		{"10.0.1.4", "10.0.1.5", "10.0.1.3"},
		{"10.0.1.5", "10.0.1.3", "10.0.1.4"},
		{"10.0.1.3", "10.0.1.4", "10.0.1.5"},
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("orders %v, want %v", got, want)
	}
}
