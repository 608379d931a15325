package controlapi

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/internal/identity"
	"github.com/shoal-dev/shoal/manager/store"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

var stackName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// DeployStack creates or updates every network, secret, config and service
// of a stack in one batch, so one Raft entry: a deploy that fails half-way
// cannot exist (Docker creates them one by one).
func (s *Server) DeployStack(ctx context.Context, req *controlv1.DeployStackRequest) (*controlv1.DeployStackResponse, error) {
	spec := req.GetStack()
	name := spec.GetName()
	if !stackName.MatchString(name) {
		return nil, grpcError(invalidf("invalid stack name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name))
	}
	if len(spec.GetServices()) == 0 {
		return nil, grpcError(invalidf("stack %s has no services", name))
	}
	var resp *controlv1.DeployStackResponse
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		var err error
		resp, err = s.planStack(tx, b, spec, req.GetPrune())
		return err
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

func labelled(a *typesv1.Annotations, stack string) *typesv1.Annotations {
	a = proto.CloneOf(a)
	if a == nil {
		a = &typesv1.Annotations{}
	}
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	a.Labels[StackLabel] = stack
	return a
}

// planStack adds to b what deploying spec changes and returns the lines
// Docker prints for it.
func (s *Server) planStack(tx store.ReadTx, b *store.Batch, spec *typesv1.StackSpec, prune bool) (*controlv1.DeployStackResponse, error) {
	stack := spec.GetName()
	resp := &controlv1.DeployStackResponse{}

	// Networks: created when missing, external ones must exist.
	netIDs := map[string]string{}
	for _, ns := range spec.GetNetworks() {
		n := ns.GetAnnotations().GetName()
		existing, _ := store.FindNetworks(tx, store.ByName(n))
		if ns.GetExternal() {
			if len(existing) == 0 {
				return nil, invalidf("network %q is declared as external, but could not be found. You need to create a swarm-scoped network before the stack is deployed", n)
			}
			netIDs[n] = existing[0].GetId()
			continue
		}
		if len(existing) > 0 {
			netIDs[n] = existing[0].GetId()
			continue
		}
		nw := &typesv1.Network{Id: identity.NewID(), Spec: proto.CloneOf(ns)}
		nw.Spec.Annotations = labelled(ns.GetAnnotations(), stack)
		b.CreateNetwork(nw)
		netIDs[n] = nw.GetId()
		resp.Actions = append(resp.Actions, "Creating network "+n)
	}

	// Secrets and configs are immutable, as in Docker: same data is fine,
	// other data is an error naming the object.
	secretIDs := map[string]string{}
	for _, ss := range spec.GetSecrets() {
		n := ss.GetAnnotations().GetName()
		existing, _ := store.FindSecrets(tx, store.ByName(n))
		if len(existing) > 0 {
			if len(ss.GetData()) > 0 && string(existing[0].GetSpec().GetData()) != string(ss.GetData()) {
				return nil, invalidf("failed to update secret %s: only updates to Labels are allowed", n)
			}
			secretIDs[n] = existing[0].GetId()
			continue
		}
		if len(ss.GetData()) == 0 {
			return nil, invalidf("secret %q is declared as external, but could not be found", n)
		}
		sec := &typesv1.Secret{Id: identity.NewID(), Spec: proto.CloneOf(ss)}
		sec.Spec.Annotations = labelled(ss.GetAnnotations(), stack)
		b.CreateSecret(sec)
		secretIDs[n] = sec.GetId()
		resp.Actions = append(resp.Actions, "Creating secret "+n)
	}
	configIDs := map[string]string{}
	for _, cs := range spec.GetConfigs() {
		n := cs.GetAnnotations().GetName()
		existing, _ := store.FindConfigs(tx, store.ByName(n))
		if len(existing) > 0 {
			if string(existing[0].GetSpec().GetData()) != string(cs.GetData()) && len(cs.GetData()) > 0 {
				return nil, invalidf("failed to update config %s: only updates to Labels are allowed", n)
			}
			configIDs[n] = existing[0].GetId()
			continue
		}
		if len(cs.GetData()) == 0 {
			return nil, invalidf("config %q is declared as external, but could not be found", n)
		}
		c := &typesv1.Config{Id: identity.NewID(), Spec: proto.CloneOf(cs)}
		c.Spec.Annotations = labelled(cs.GetAnnotations(), stack)
		b.CreateConfig(c)
		configIDs[n] = c.GetId()
		resp.Actions = append(resp.Actions, "Creating config "+n)
	}

	resolveNet := func(svc string, a *typesv1.NetworkAttachmentConfig) error {
		t := a.GetTarget()
		if id, ok := netIDs[t]; ok {
			a.Target = id
			return nil
		}
		if nw, _ := store.FindNetworks(tx, store.ByName(t)); len(nw) == 1 {
			a.Target = nw[0].GetId()
			return nil
		}
		if nw := store.GetNetwork(tx, t); nw != nil {
			return nil
		}
		return invalidf("service %s: network %q not found", svc, t)
	}

	inSpec := map[string]bool{}
	services := append([]*typesv1.ServiceSpec(nil), spec.GetServices()...)
	sort.Slice(services, func(i, j int) bool {
		return services[i].GetAnnotations().GetName() < services[j].GetAnnotations().GetName()
	})
	for _, orig := range services {
		ss := proto.CloneOf(orig)
		n := ss.GetAnnotations().GetName()
		if !strings.HasPrefix(n, stack+"_") {
			return nil, invalidf("service %q of stack %s must be named %s_<name>", n, stack, stack)
		}
		inSpec[n] = true
		ss.Annotations = labelled(ss.GetAnnotations(), stack)
		if ss.GetTask().GetContainer().GetImage() == "" {
			return nil, invalidf("service %s: no image", n)
		}
		for _, a := range ss.GetNetworks() {
			if err := resolveNet(n, a); err != nil {
				return nil, err
			}
		}
		for _, a := range ss.GetTask().GetNetworks() {
			if err := resolveNet(n, a); err != nil {
				return nil, err
			}
		}
		for _, r := range ss.GetTask().GetContainer().GetSecrets() {
			id, ok := secretIDs[r.GetSecretName()]
			if !ok {
				if sec, _ := store.FindSecrets(tx, store.ByName(r.GetSecretName())); len(sec) == 1 {
					id = sec[0].GetId()
				} else {
					return nil, invalidf("service %s: secret not found: %s", n, r.GetSecretName())
				}
			}
			r.SecretId = id
		}
		for _, r := range ss.GetTask().GetContainer().GetConfigs() {
			id, ok := configIDs[r.GetConfigName()]
			if !ok {
				if c, _ := store.FindConfigs(tx, store.ByName(r.GetConfigName())); len(c) == 1 {
					id = c[0].GetId()
				} else {
					return nil, invalidf("service %s: config not found: %s", n, r.GetConfigName())
				}
			}
			r.ConfigId = id
		}
		existing, _ := store.FindServices(tx, store.ByName(n))
		var current *typesv1.Service
		if len(existing) > 0 {
			current = existing[0]
		}
		if err := s.checkPorts(tx, current, ss); err != nil {
			return nil, err
		}
		if err := checkStackPorts(services, ss); err != nil {
			return nil, err
		}
		if current == nil {
			svc := &typesv1.Service{
				Id:          identity.NewID(),
				Spec:        ss,
				SpecVersion: 1,
			}
			b.CreateService(svc)
			resp.ServiceIds = append(resp.ServiceIds, svc.GetId())
			resp.Actions = append(resp.Actions, "Creating service "+n)
			continue
		}
		resp.ServiceIds = append(resp.ServiceIds, current.GetId())
		// Docker prints "Updating service" even when nothing changed;
		// nothing is written then, so nothing restarts.
		resp.Actions = append(resp.Actions, "Updating service "+n+" (id: "+current.GetId()+")")
		updateServiceSpec(b, current, ss)
	}
	if prune {
		old, _ := store.FindServices(tx, store.ByStack(stack))
		for _, svc := range old {
			if !inSpec[svc.GetSpec().GetAnnotations().GetName()] {
				b.DeleteService(svc)
				resp.Actions = append(resp.Actions, "Removing service "+svc.GetSpec().GetAnnotations().GetName())
			}
		}
	}
	return resp, nil
}

func portKey(p *typesv1.PortConfig) string {
	return fmt.Sprintf("%d/%s", p.GetPublishedPort(), strings.ToLower(strings.TrimPrefix(p.GetProtocol().String(), "PROTOCOL_")))
}

// checkPorts refuses a published ingress port that another service already
// publishes; every node listens on it, so two services cannot share it.
// A port new to the service must also be free on this node (Hooks.PortFree):
// another program listening there would take its connections.
func (s *Server) checkPorts(tx store.ReadTx, self *typesv1.Service, spec *typesv1.ServiceSpec) error {
	if err := checkPorts(tx, self.GetId(), spec); err != nil {
		return err
	}
	if s.hooks.PortFree == nil {
		return nil
	}
	had := map[string]bool{}
	for _, p := range self.GetEndpoint().GetPorts() {
		had[portKey(p)] = true
	}
	for _, p := range self.GetSpec().GetEndpoint().GetPorts() {
		had[portKey(p)] = true
	}
	for _, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishedPort() == 0 || p.GetPublishMode() != typesv1.PortConfig_PUBLISH_MODE_INGRESS || had[portKey(p)] {
			continue
		}
		proto := "tcp"
		if p.GetProtocol() == typesv1.PortConfig_PROTOCOL_UDP {
			proto = "udp"
		}
		if err := s.hooks.PortFree(p.GetPublishedPort(), proto); err != nil {
			return invalidf("service %s: %v", spec.GetAnnotations().GetName(), err)
		}
	}
	return nil
}

func checkPorts(tx store.ReadTx, selfID string, spec *typesv1.ServiceSpec) error {
	want := map[string]*typesv1.PortConfig{}
	for _, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishedPort() != 0 && p.GetPublishMode() == typesv1.PortConfig_PUBLISH_MODE_INGRESS {
			want[portKey(p)] = p
		}
	}
	if len(want) == 0 {
		return nil
	}
	svcs, _ := store.FindServices(tx, store.All)
	for _, o := range svcs {
		if o.GetId() == selfID {
			continue
		}
		for _, p := range o.GetSpec().GetEndpoint().GetPorts() {
			if p.GetPublishMode() != typesv1.PortConfig_PUBLISH_MODE_INGRESS {
				continue
			}
			if _, clash := want[portKey(p)]; clash {
				return invalidf("port '%d' is already in use by service '%s' (%s) as an ingress port", p.GetPublishedPort(), o.GetSpec().GetAnnotations().GetName(), o.GetId())
			}
		}
	}
	return nil
}

// checkStackPorts refuses two services of the same stack publishing one port.
func checkStackPorts(all []*typesv1.ServiceSpec, spec *typesv1.ServiceSpec) error {
	mine := map[string]bool{}
	for _, p := range spec.GetEndpoint().GetPorts() {
		if p.GetPublishedPort() != 0 && p.GetPublishMode() == typesv1.PortConfig_PUBLISH_MODE_INGRESS {
			mine[portKey(p)] = true
		}
	}
	for _, o := range all {
		if o.GetAnnotations().GetName() == spec.GetAnnotations().GetName() {
			continue
		}
		for _, p := range o.GetEndpoint().GetPorts() {
			if p.GetPublishMode() == typesv1.PortConfig_PUBLISH_MODE_INGRESS && mine[portKey(p)] {
				return invalidf("services %s and %s both publish port %d", o.GetAnnotations().GetName(), spec.GetAnnotations().GetName(), p.GetPublishedPort())
			}
		}
	}
	return nil
}

// RemoveStack deletes a stack's services, networks, secrets and configs in
// one batch; the orchestrator then shuts the tasks down.
func (s *Server) RemoveStack(ctx context.Context, req *controlv1.RemoveStackRequest) (*controlv1.RemoveStackResponse, error) {
	resp := &controlv1.RemoveStackResponse{}
	err := s.retry(ctx, func(tx store.ReadTx, b *store.Batch) error {
		resp.Actions = nil
		name := req.GetName()
		svcs, _ := store.FindServices(tx, store.ByStack(name))
		nets, _ := store.FindNetworks(tx, store.ByStack(name))
		secs, _ := store.FindSecrets(tx, store.ByStack(name))
		cfgs, _ := store.FindConfigs(tx, store.ByStack(name))
		if len(svcs)+len(nets)+len(secs)+len(cfgs) == 0 {
			return notFoundf("Nothing found in stack: %s", name)
		}
		sort.Slice(svcs, func(i, j int) bool {
			return svcs[i].GetSpec().GetAnnotations().GetName() < svcs[j].GetSpec().GetAnnotations().GetName()
		})
		for _, o := range svcs {
			b.DeleteService(o)
			resp.Actions = append(resp.Actions, "Removing service "+o.GetSpec().GetAnnotations().GetName())
		}
		for _, o := range secs {
			b.DeleteSecret(o)
			resp.Actions = append(resp.Actions, "Removing secret "+o.GetSpec().GetAnnotations().GetName())
		}
		for _, o := range cfgs {
			b.DeleteConfig(o)
			resp.Actions = append(resp.Actions, "Removing config "+o.GetSpec().GetAnnotations().GetName())
		}
		for _, o := range nets {
			b.DeleteNetwork(o)
			resp.Actions = append(resp.Actions, "Removing network "+o.GetSpec().GetAnnotations().GetName())
		}
		return nil
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return resp, nil
}

// ListStacks lists stacks with their service counts.
func (s *Server) ListStacks(ctx context.Context, _ *controlv1.ListStacksRequest) (*controlv1.ListStacksResponse, error) {
	counts := map[string]int64{}
	s.store.View(func(tx store.ReadTx) {
		svcs, _ := store.FindServices(tx, store.All)
		for _, svc := range svcs {
			if st := svc.GetSpec().GetAnnotations().GetLabels()[StackLabel]; st != "" {
				counts[st]++
			}
		}
	})
	resp := &controlv1.ListStacksResponse{}
	for name, n := range counts {
		resp.Stacks = append(resp.Stacks, &controlv1.StackSummary{Name: name, Services: n})
	}
	sort.Slice(resp.Stacks, func(i, j int) bool { return resp.Stacks[i].GetName() < resp.Stacks[j].GetName() })
	return resp, nil
}
