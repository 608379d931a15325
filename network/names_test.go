package network

import (
	"strings"
	"testing"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func TestNames(t *testing.T) {
	for _, prefix := range []string{"shl", "sht1a2b", "a"} {
		for _, id := range []string{"k3j4h5g6f7d8s9a0q1w2e3r4t", "ab", "UPPER/weird id"} {
			for salt := range 3 {
				b := bridgeName(prefix, id, salt)
				if len(b) > ifNameMax || !strings.HasPrefix(b, bridgePrefix(prefix)) {
					t.Errorf("bridgeName(%q, %q, %d) = %q", prefix, id, salt, b)
				}
				v := vethName(prefix, id, salt, salt)
				if len(v) != ifNameMax || !strings.HasPrefix(v, prefix+"-") || strings.HasPrefix(v, bridgePrefix(prefix)) {
					t.Errorf("vethName(%q, %q) = %q", prefix, id, v)
				}
			}
		}
	}
	if got := bridgeName("shl", "k3j4h5g6f7d8s9a0q1w2e3r4t", 0); got != "shl-br-k3j4h5g6" {
		t.Errorf("bridge name = %q, want shl-br-k3j4h5g6 (DESIGN.md)", got)
	}
	if bridgeName("shl", "abc", 0) == bridgeName("shl", "abc", 1) {
		t.Error("salt does not change the bridge name")
	}
	for _, tc := range []struct {
		name, typ string
		want      bool
	}{
		{vethName("shl", "t", 0, 0), "veth", true},
		{bridgeName("shl", "n", 0), "bridge", true},
		{"shl-o0", "veth", false},
		{"shl-vx-abc", "vxlan", false},
		{"shlx-br-abc", "bridge", false},
		{vethName("shl", "t", 0, 0), "dummy", false},
	} {
		if looksMade("shl", tc.name, tc.typ) != tc.want {
			t.Errorf("looksMade(%q, %s) = %v", tc.name, tc.typ, !tc.want)
		}
	}
	for p, want := range map[string]bool{"shl": true, "sht1a2b": true, "": false, "sht1a2b3": false, "sh-l": false, "SHL": false} {
		if validPrefix(p) != want {
			t.Errorf("validPrefix(%q) = %v", p, !want)
		}
	}
	for id, want := range map[string]bool{"abc123": true, "a.b-c_d": true, "": false, "..": false, "a/b": false, "a b": false} {
		if validTaskID(id) != want {
			t.Errorf("validTaskID(%q) = %v", id, !want)
		}
	}
}

func TestAlias(t *testing.T) {
	o, ok := parseAlias(vethAlias("task1", "net1", 2))
	if !ok || o != (owner{netID: "net1", taskID: "task1", ifName: "eth2", index: 2}) {
		t.Errorf("veth alias round trip: %+v %v", o, ok)
	}
	o, ok = parseAlias(bridgeAlias("net1"))
	if !ok || o != (owner{netID: "net1"}) {
		t.Errorf("bridge alias round trip: %+v %v", o, ok)
	}
	for _, a := range []string{"", "shoal", "docker net=x", "shoal net=", "shoal task=t net=n if=eth0", "shoal task=t net=n idx=x if=eth0"} {
		if _, ok := parseAlias(a); ok {
			t.Errorf("parseAlias(%q) accepted", a)
		}
	}
}

func network(id, subnet, gateway string) *typesv1.Network {
	return &typesv1.Network{Id: id, Ipam: &typesv1.IPAMOptions{Configs: []*typesv1.IPAMConfig{{Subnet: subnet, Gateway: gateway}}}}
}

func attach(n *typesv1.Network, addrs ...string) *typesv1.NetworkAttachment {
	return &typesv1.NetworkAttachment{Network: n, Addresses: addrs}
}

func TestParseAttachment(t *testing.T) {
	specOnly := &typesv1.Network{Id: "n", Spec: &typesv1.NetworkSpec{
		Ipam:       &typesv1.IPAMOptions{Configs: []*typesv1.IPAMConfig{{Subnet: "10.9.0.0/16"}}},
		DriverOpts: map[string]string{mtuOption: "1400"},
	}}
	dual := &typesv1.Network{Id: "n", Ipam: &typesv1.IPAMOptions{Configs: []*typesv1.IPAMConfig{
		{Subnet: "fd00::/64"}, {Subnet: "10.0.1.0/24", Gateway: "10.0.1.254"},
	}}}
	for _, tc := range []struct {
		name    string
		att     *typesv1.NetworkAttachment
		addr    string // want, "" for an error
		gw      string
		mtu     int
		wantErr string
	}{
		{name: "cidr", att: attach(network("n", "10.0.1.0/24", ""), "10.0.1.5/24"), addr: "10.0.1.5/24", gw: "10.0.1.1", mtu: 1500},
		{name: "bare ip", att: attach(network("n", "10.0.1.0/24", "10.0.1.9"), "10.0.1.5"), addr: "10.0.1.5/24", gw: "10.0.1.9", mtu: 1500},
		{name: "spec ipam and mtu", att: attach(specOnly, "10.9.3.4/16"), addr: "10.9.3.4/16", gw: "10.9.0.1", mtu: 1400},
		{name: "ipv6 skipped", att: attach(dual, "fd00::5/64", "10.0.1.5/24"), addr: "10.0.1.5/24", gw: "10.0.1.254", mtu: 1500},
		{name: "no network", att: &typesv1.NetworkAttachment{Addresses: []string{"10.0.1.5/24"}}, wantErr: "without a network id"},
		{name: "no address", att: attach(network("n", "10.0.1.0/24", "")), wantErr: "no IPv4 address"},
		{name: "outside", att: attach(network("n", "10.0.1.0/24", ""), "10.0.2.5/24"), wantErr: "outside"},
		{name: "wrong mask", att: attach(network("n", "10.0.1.0/24", ""), "10.0.1.5/16"), wantErr: "does not match"},
		{name: "gateway", att: attach(network("n", "10.0.1.0/24", ""), "10.0.1.1/24"), wantErr: "gateway"},
		{name: "bad gateway", att: attach(network("n", "10.0.1.0/24", "10.0.2.1"), "10.0.1.5/24"), wantErr: "gateway"},
		{name: "no subnet", att: attach(&typesv1.Network{Id: "n"}, "10.0.1.5/24"), wantErr: "no IPv4 subnet"},
		{name: "bad subnet", att: attach(network("n", "10.0.1.0", ""), "10.0.1.5/24"), wantErr: "subnet"},
		{name: "bad mtu", att: attach(&typesv1.Network{Id: "n", Ipam: network("n", "10.0.1.0/24", "").Ipam,
			Spec: &typesv1.NetworkSpec{DriverOpts: map[string]string{mtuOption: "9"}}}, "10.0.1.5/24"), wantErr: "MTU"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, err := parseAttachment(tc.att)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if at.addr.String() != tc.addr || at.gw.String() != tc.gw || at.mtu != tc.mtu {
				t.Errorf("got addr %s gw %s mtu %d, want %s %s %d", at.addr, at.gw, at.mtu, tc.addr, tc.gw, tc.mtu)
			}
		})
	}
	if _, err := parseAttachments([]*typesv1.NetworkAttachment{
		attach(network("n", "10.0.1.0/24", ""), "10.0.1.5/24"),
		attach(network("n", "10.0.1.0/24", ""), "10.0.1.6/24"),
	}); err == nil {
		t.Error("a network attached twice was accepted")
	}
}
