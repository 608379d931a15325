package allocator

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// mkNetwork is a network as the control API stores it: a spec, no
// allocation. cfgs are its `ipam.config` entries.
func mkNetwork(id, name string, cfgs ...*typesv1.IPAMConfig) *typesv1.Network {
	n := &typesv1.Network{Id: id, Spec: &typesv1.NetworkSpec{
		Annotations: &typesv1.Annotations{Name: name, Labels: map[string]string{store.StackLabel: "st"}},
		Driver:      "overlay",
	}}
	if len(cfgs) > 0 {
		n.Spec.Ipam = &typesv1.IPAMOptions{Configs: cfgs}
	}
	return n
}

func subnet(s string) *typesv1.IPAMConfig { return &typesv1.IPAMConfig{Subnet: s} }

// mkService is a service of stack "st" as the control API stores it: the
// endpoint is the spec's, with nothing allocated.
func mkService(id, short string, networks []string, ports ...*typesv1.PortConfig) *typesv1.Service {
	spec := &typesv1.ServiceSpec{
		Annotations: &typesv1.Annotations{Name: "st_" + short, Labels: map[string]string{store.StackLabel: "st"}},
		Task:        &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: "nginx:alpine"}},
		Mode:        &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: 1}},
	}
	for _, n := range networks {
		// As the stack converter does: the short name is already an alias.
		spec.Task.Networks = append(spec.Task.Networks, &typesv1.NetworkAttachmentConfig{Target: n, Aliases: []string{short}})
	}
	if len(ports) > 0 {
		spec.Endpoint = &typesv1.EndpointSpec{Ports: ports}
	}
	return &typesv1.Service{
		Id:          id,
		Spec:        spec,
		SpecVersion: 1,
		Endpoint:    &typesv1.Endpoint{Spec: proto.CloneOf(spec.GetEndpoint()), Ports: proto.CloneOf(spec.GetEndpoint()).GetPorts()},
	}
}

func dnsrr(s *typesv1.Service) *typesv1.Service {
	if s.Spec.Endpoint == nil {
		s.Spec.Endpoint = &typesv1.EndpointSpec{}
	}
	s.Spec.Endpoint.Mode = typesv1.EndpointSpec_MODE_DNSRR
	s.Endpoint.Spec = proto.CloneOf(s.Spec.Endpoint)
	return s
}

func tcp(target, published uint32) *typesv1.PortConfig {
	return &typesv1.PortConfig{TargetPort: target, PublishedPort: published}
}

func udp(target, published uint32) *typesv1.PortConfig {
	return &typesv1.PortConfig{Protocol: typesv1.PortConfig_PROTOCOL_UDP, TargetPort: target, PublishedPort: published}
}

func hostPort(target, published uint32) *typesv1.PortConfig {
	return &typesv1.PortConfig{TargetPort: target, PublishedPort: published, PublishMode: typesv1.PortConfig_PUBLISH_MODE_HOST}
}

// mkTask is a NEW task of svc as package deploy makes it.
func mkTask(id string, svc *typesv1.Service, slot uint64) *typesv1.Task {
	t := &typesv1.Task{
		Id:                 id,
		ServiceId:          svc.GetId(),
		Slot:               slot,
		Spec:               proto.CloneOf(svc.GetSpec().GetTask()),
		ServiceAnnotations: proto.CloneOf(svc.GetSpec().GetAnnotations()),
		DesiredState:       typesv1.TaskState_TASK_STATE_RUNNING,
		Status:             &typesv1.TaskStatus{State: typesv1.TaskState_TASK_STATE_NEW},
	}
	if ep := svc.GetSpec().GetEndpoint(); ep != nil {
		t.Endpoint = &typesv1.Endpoint{Spec: proto.CloneOf(ep)}
	}
	return t
}

func end(t *typesv1.Task, st typesv1.TaskState) {
	t.DesiredState = typesv1.TaskState_TASK_STATE_SHUTDOWN
	t.Status = &typesv1.TaskStatus{State: st}
}

func mustNew(t *testing.T, nets []*typesv1.Network, svcs []*typesv1.Service, tasks []*typesv1.Task) *Allocator {
	t.Helper()
	a, err := New(nets, svcs, tasks)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func mustNetwork(t *testing.T, a *Allocator, n *typesv1.Network) {
	t.Helper()
	if _, err := a.AllocateNetwork(n); err != nil {
		t.Fatalf("AllocateNetwork(%s): %v", n.GetId(), err)
	}
}

func mustService(t *testing.T, a *Allocator, s *typesv1.Service) {
	t.Helper()
	if _, err := a.AllocateService(s); err != nil {
		t.Fatalf("AllocateService(%s): %v", s.GetId(), err)
	}
}

func mustTask(t *testing.T, a *Allocator, tk *typesv1.Task, s *typesv1.Service) {
	t.Helper()
	if _, err := a.AllocateTask(tk, s); err != nil {
		t.Fatalf("AllocateTask(%s): %v", tk.GetId(), err)
	}
}

// addrOn is the task's address on network id, or "".
func addrOn(tk *typesv1.Task, id string) string {
	for _, att := range tk.GetNetworks() {
		if att.GetNetwork().GetId() == id && len(att.GetAddresses()) > 0 {
			return att.GetAddresses()[0]
		}
	}
	return ""
}

// vipOn is the service's VIP on network id, or "".
func vipOn(s *typesv1.Service, id string) string {
	for _, v := range s.GetEndpoint().GetVirtualIps() {
		if v.GetNetworkId() == id {
			return v.GetAddr()
		}
	}
	return ""
}

func published(s *typesv1.Service) []uint32 {
	var out []uint32
	for _, p := range s.GetEndpoint().GetPorts() {
		out = append(out, p.GetPublishedPort())
	}
	return out
}

// wantErr checks that err matches kind and mentions every one of words.
func wantErr(t *testing.T, err, kind error, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", kind)
	}
	if !errors.Is(err, kind) {
		t.Fatalf("error %q is not %v", err, kind)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

// state lists everything an allocator holds, one line per thing, sorted:
// two allocators with equal states hand out the same things next.
func (a *Allocator) state() []string {
	var out []string
	for id, n := range a.networks {
		for _, p := range n.pools {
			out = append(out, fmt.Sprintf("network %s pool %s gw %s range %d-%d", id, p.prefix, p.gateway, p.lo, p.hi))
			for off, who := range p.owners {
				if p.used[off/64]&(1<<(off%64)) == 0 {
					out = append(out, fmt.Sprintf("BUG: %s owned by %s but not marked used", p.addr(off), who))
				}
				out = append(out, fmt.Sprintf("addr %s/%s %s", id, p.addr(off), who))
			}
			marked := 0
			for _, w := range p.used {
				for ; w != 0; w &= w - 1 {
					marked++
				}
			}
			out = append(out, fmt.Sprintf("network %s pool %s marked %d", id, p.prefix, marked))
		}
	}
	for id, name := range a.pending {
		out = append(out, fmt.Sprintf("pending %s %s reserved %v", id, name, a.reserved[id]))
	}
	for k, id := range a.ports {
		out = append(out, fmt.Sprintf("port %s %s", k, id))
	}
	slices.Sort(out)
	return out
}
