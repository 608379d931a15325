package dnat

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNormalize(t *testing.T) {
	src := netip.MustParsePrefix("10.0.0.0/24")
	tests := []struct {
		name      string
		vips      []VIP
		ports     []Port
		wantVIPs  []VIP
		wantPorts []Port
		wantErr   string // substring; ErrInvalid is checked too
	}{
		{
			name: "sorted, repeats and empty frontends dropped",
			vips: []VIP{
				{Name: "b", Addr: netip.MustParseAddr("10.0.0.20"), Source: netip.MustParsePrefix("10.0.0.9/24"), Backends: addrs("10.0.0.3", "10.0.0.2", "10.0.0.3")},
				{Name: "idle", Addr: netip.MustParseAddr("10.0.0.30"), Source: src},
				{Name: "a", Addr: netip.MustParseAddr("::ffff:10.0.0.10"), Source: src, Backends: addrs("::ffff:10.0.0.5")},
			},
			ports: []Port{
				{Name: "u", Port: 53, Proto: "udp", Target: 53, Backends: addrs("10.0.0.2")},
				{Name: "t2", Port: 443, Proto: "tcp", Target: 8443, Backends: addrs("10.0.0.2")},
				{Name: "t1", Port: 80, Proto: "tcp", Target: 8080, Backends: addrs("10.0.0.9", "10.0.0.1")},
				{Name: "none", Port: 81, Proto: "tcp", Target: 8080},
			},
			wantVIPs: []VIP{
				{Name: "a", Addr: netip.MustParseAddr("10.0.0.10"), Source: src, Backends: addrs("10.0.0.5")},
				{Name: "b", Addr: netip.MustParseAddr("10.0.0.20"), Source: src, Backends: addrs("10.0.0.2", "10.0.0.3")},
			},
			wantPorts: []Port{
				{Name: "t1", Port: 80, Proto: "tcp", Target: 8080, Backends: addrs("10.0.0.1", "10.0.0.9")},
				{Name: "t2", Port: 443, Proto: "tcp", Target: 8443, Backends: addrs("10.0.0.2")},
				{Name: "u", Port: 53, Proto: "udp", Target: 53, Backends: addrs("10.0.0.2")},
			},
		},
		{name: "nothing"},
		{name: "IPv6 VIP", vips: []VIP{{Addr: netip.MustParseAddr("fd00::1"), Source: src}}, wantErr: "not an IPv4"},
		{name: "no source", vips: []VIP{{Addr: netip.MustParseAddr("10.0.0.1")}}, wantErr: "source"},
		{name: "IPv6 backend", vips: []VIP{{Addr: netip.MustParseAddr("10.0.0.1"), Source: src, Backends: addrs("fd00::2")}}, wantErr: "backend fd00::2"},
		{name: "VIP twice", vips: []VIP{{Addr: netip.MustParseAddr("10.0.0.1"), Source: src}, {Addr: netip.MustParseAddr("10.0.0.1"), Source: src}}, wantErr: "twice"},
		{name: "bad proto", ports: []Port{{Port: 80, Proto: "sctp", Target: 80}}, wantErr: "protocol"},
		{name: "port 0", ports: []Port{{Port: 0, Proto: "tcp", Target: 80}}, wantErr: "must not be 0"},
		{name: "target 0", ports: []Port{{Port: 80, Proto: "tcp"}}, wantErr: "must not be 0"},
		{name: "port twice", ports: []Port{{Port: 80, Proto: "tcp", Target: 1}, {Port: 80, Proto: "tcp", Target: 2}}, wantErr: "twice"},
		{name: "same port, two protocols", ports: []Port{{Port: 53, Proto: "tcp", Target: 1}, {Port: 53, Proto: "udp", Target: 2}}},
		{
			name: "remote tasks and nodes sorted, frontends with only them kept",
			vips: []VIP{{Name: "r", Addr: netip.MustParseAddr("10.0.0.10"), Source: src, Remote: addrs("10.0.0.8", "::ffff:10.0.0.7", "10.0.0.8")}},
			ports: []Port{{Name: "m", Port: 80, Proto: "tcp", Target: 8080, Remote: []Remote{
				{Node: netip.MustParseAddr("192.0.2.9"), Weight: 2}, {Node: netip.MustParseAddr("::ffff:192.0.2.8"), Weight: 1}}}},
			wantVIPs: []VIP{{Name: "r", Addr: netip.MustParseAddr("10.0.0.10"), Source: src, Backends: addrs(), Remote: addrs("10.0.0.7", "10.0.0.8")}},
			wantPorts: []Port{{Name: "m", Port: 80, Proto: "tcp", Target: 8080, Backends: addrs(), Remote: []Remote{
				{Node: netip.MustParseAddr("192.0.2.8"), Weight: 1}, {Node: netip.MustParseAddr("192.0.2.9"), Weight: 2}}}},
		},
		{name: "IPv6 remote task", vips: []VIP{{Addr: netip.MustParseAddr("10.0.0.1"), Source: src, Remote: addrs("fd00::2")}}, wantErr: "remote task fd00::2"},
		{
			name: "remote task local elsewhere",
			vips: []VIP{
				{Name: "a", Addr: netip.MustParseAddr("10.0.0.1"), Source: src, Backends: addrs("10.0.0.5")},
				{Name: "b", Addr: netip.MustParseAddr("10.0.0.2"), Source: src, Backends: addrs("10.0.0.6"), Remote: addrs("10.0.0.5")},
			},
			wantErr: `remote task 10.0.0.5 is a local backend of "a"`,
		},
		{name: "remote task local too", vips: []VIP{{Name: "a", Addr: netip.MustParseAddr("10.0.0.1"), Source: src, Backends: addrs("10.0.0.5"), Remote: addrs("10.0.0.5")}}, wantErr: "is a local backend"},
		{name: "weight 0", ports: []Port{{Port: 80, Proto: "tcp", Target: 80, Remote: []Remote{{Node: netip.MustParseAddr("192.0.2.1")}}}}, wantErr: "weight 0"},
		{name: "weight too big", ports: []Port{{Port: 80, Proto: "tcp", Target: 80, Remote: []Remote{{Node: netip.MustParseAddr("192.0.2.1"), Weight: MaxWeight + 1}}}}, wantErr: "weight"},
		{name: "IPv6 node", ports: []Port{{Port: 80, Proto: "tcp", Target: 80, Remote: []Remote{{Node: netip.MustParseAddr("fd00::1"), Weight: 1}}}}, wantErr: "remote node fd00::1"},
		{name: "node twice", ports: []Port{{Port: 80, Proto: "tcp", Target: 80, Remote: []Remote{
			{Node: netip.MustParseAddr("192.0.2.1"), Weight: 1}, {Node: netip.MustParseAddr("192.0.2.1"), Weight: 2}}}}, wantErr: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := normalize(tt.vips, tt.ports)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := frontends{vips: tt.wantVIPs, ports: tt.wantPorts}
			if !got.equal(want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestNormalizeCopies(t *testing.T) {
	backends := addrs("10.0.0.3", "10.0.0.2")
	fe, err := normalize(nil, []Port{{Port: 1, Proto: "tcp", Target: 1, Backends: backends}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(backends, addrs("10.0.0.3", "10.0.0.2")) {
		t.Errorf("caller's slice changed: %v", backends)
	}
	backends[0] = netip.MustParseAddr("10.0.0.99")
	if fe.ports[0].Backends[1] != netip.MustParseAddr("10.0.0.3") {
		t.Errorf("normalized frontends share the caller's slice: %v", fe.ports[0].Backends)
	}
}

func TestFrontendsEqual(t *testing.T) {
	base := func() frontends {
		fe, err := normalize(
			[]VIP{{Name: "v", Addr: netip.MustParseAddr("10.0.0.1"), Source: netip.MustParsePrefix("10.0.0.0/24"), Backends: addrs("10.0.0.2")}},
			[]Port{{Name: "p", Port: 80, Proto: "tcp", Target: 8080, Backends: addrs("10.0.0.2", "10.0.0.3")}})
		if err != nil {
			t.Fatal(err)
		}
		return fe
	}
	changes := map[string]func(*frontends){
		"vip name":     func(f *frontends) { f.vips[0].Name = "w" },
		"vip source":   func(f *frontends) { f.vips[0].Source = netip.MustParsePrefix("10.0.0.0/16") },
		"vip backend":  func(f *frontends) { f.vips[0].Backends[0] = netip.MustParseAddr("10.0.0.4") },
		"port target":  func(f *frontends) { f.ports[0].Target = 8081 },
		"port backend": func(f *frontends) { f.ports[0].Backends = f.ports[0].Backends[:1] },
		"no ports":     func(f *frontends) { f.ports = nil },
		"vip remote":   func(f *frontends) { f.vips[0].Remote = addrs("10.0.0.9") },
		"port remote":  func(f *frontends) { f.ports[0].Remote = []Remote{{Node: netip.MustParseAddr("192.0.2.1"), Weight: 1}} },
		"nodes":        func(f *frontends) { f.nodes = addrs("192.0.2.1") },
	}
	if !base().equal(base()) {
		t.Fatal("equal input is not equal")
	}
	for name, change := range changes {
		fe := base()
		change(&fe)
		if fe.equal(base()) || base().equal(fe) {
			t.Errorf("%s: still equal", name)
		}
	}
}

// TestWithNodes: the node list is part of the frontends only when a
// port has remote nodes, so that a new list changes nothing otherwise.
func TestWithNodes(t *testing.T) {
	nodes := addrs("192.0.2.1")
	fe, err := normalize(nil, []Port{{Port: 80, Proto: "tcp", Target: 80, Backends: addrs("10.0.0.2")}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fe.withNodes(nodes); got.nodes != nil || !got.equal(fe) {
		t.Errorf("without remote nodes: %+v", got)
	}
	fe.ports[0].Remote = []Remote{{Node: netip.MustParseAddr("192.0.2.2"), Weight: 1}}
	if got := fe.withNodes(nodes); !slices.Equal(got.nodes, nodes) || got.equal(fe) {
		t.Errorf("with remote nodes: %+v", got)
	}
}

// TestEnsureBridgeNetfilter runs against a directory of its own, with
// a modprobe stand-in.
func TestEnsureBridgeNetfilter(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "bridge")
	call := filepath.Join(sys, "bridge-nf-call-iptables")
	// The module is missing and cannot be loaded.
	if err := ensureBridgeNetfilter(sys, filepath.Join(dir, "no-modprobe")); err == nil || !strings.Contains(err.Error(), "br_netfilter") {
		t.Errorf("without modprobe: %v, want an error naming br_netfilter", err)
	}
	// Loading it makes the directory, with the setting off.
	modprobe := filepath.Join(dir, "modprobe")
	script := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = br_netfilter ] && mkdir -p %s && echo 0 > %s\n", sys, call)
	if err := os.WriteFile(modprobe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ensureBridgeNetfilter(sys, modprobe); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(call); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Errorf("bridge-nf-call-iptables: %q, %v; want 1", b, err)
	}
	// Already on: nothing is written (root ignores file modes, so the
	// modification time tells).
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(call, past, past); err != nil {
		t.Fatal(err)
	}
	if err := ensureBridgeNetfilter(sys, filepath.Join(dir, "no-modprobe")); err != nil {
		t.Errorf("already on: %v", err)
	}
	if fi, err := os.Stat(call); err != nil || !fi.ModTime().Equal(past) {
		t.Errorf("already on: the setting was written again (%v)", err)
	}
}

func TestNewConfig(t *testing.T) {
	m, err := New(Config{})
	if err != nil || m.cfg.Table != DefaultTable || m.cfg.BridgePrefix != DefaultBridgePrefix {
		t.Errorf("defaults: %+v, %v", m.cfg, err)
	}
	if _, err := New(Config{BridgePrefix: "much-too-long-prefix"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("long bridge prefix: %v, want ErrInvalid", err)
	}
	if _, err := New(Config{Table: strings.Repeat("t", 300)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("long table name: %v, want ErrInvalid", err)
	}
	if err := m.Forget(netip.MustParseAddr("fd00::1")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Forget IPv6: %v, want ErrInvalid", err)
	}
	// Invalid input is refused before anything is sent.
	if err := m.Sync(nil, []Port{{Port: 80, Proto: "icmp", Target: 80}}); !errors.Is(err, ErrInvalid) || m.writes != 0 {
		t.Errorf("Sync of a bad port: %v, %d writes", err, m.writes)
	}
}
