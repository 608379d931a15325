package controlapi

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shoal-dev/shoal/manager/store"
	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

func newServer(t *testing.T) (*Server, *store.Store) {
	t.Helper()
	s := store.New()
	return New(s, store.NewLocalProposer(s), "node1", Hooks{}), s
}

func webStack(stack string, replicas uint64, published uint32, env ...string) *typesv1.StackSpec {
	return &typesv1.StackSpec{
		Name: stack,
		Networks: []*typesv1.NetworkSpec{{
			Annotations: &typesv1.Annotations{Name: stack + "_webnet"},
			Driver:      "overlay",
		}},
		Services: []*typesv1.ServiceSpec{{
			Annotations: &typesv1.Annotations{Name: stack + "_web"},
			Task: &typesv1.TaskSpec{
				Container: &typesv1.ContainerSpec{Image: "helper:latest", Env: env},
			},
			Mode:     &typesv1.ServiceSpec_Replicated{Replicated: &typesv1.ReplicatedService{Replicas: replicas}},
			Networks: []*typesv1.NetworkAttachmentConfig{{Target: stack + "_webnet"}},
			Endpoint: &typesv1.EndpointSpec{Ports: []*typesv1.PortConfig{{TargetPort: 80, PublishedPort: published}}},
		}},
	}
}

func TestDeployStackCreatesAllInOneEntry(t *testing.T) {
	srv, st := newServer(t)
	ctx := context.Background()
	before := st.Index()
	resp, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("gs", 5, 4000)})
	if err != nil {
		t.Fatal(err)
	}
	if st.Index() != before+1 {
		t.Errorf("deploy took %d store entries, want 1", st.Index()-before)
	}
	want := []string{"Creating network gs_webnet", "Creating service gs_web"}
	if strings.Join(resp.GetActions(), "|") != strings.Join(want, "|") {
		t.Errorf("actions %q, want %q", resp.GetActions(), want)
	}
	svc, err := srv.GetService(ctx, &controlv1.GetServiceRequest{Ref: "gs_web"})
	if err != nil {
		t.Fatal(err)
	}
	var netID string
	st.View(func(tx store.ReadTx) {
		nets, _ := store.FindNetworks(tx, store.ByName("gs_webnet"))
		if len(nets) == 1 {
			netID = nets[0].GetId()
		}
	})
	if got := svc.GetService().GetSpec().GetNetworks()[0].GetTarget(); got != netID || netID == "" {
		t.Errorf("service network target %q, want the network's id %q", got, netID)
	}
	if l := svc.GetService().GetSpec().GetAnnotations().GetLabels()[StackLabel]; l != "gs" {
		t.Errorf("stack label %q", l)
	}

	// The same stack again changes nothing, so restarts nothing.
	idx := st.Index()
	if _, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("gs", 5, 4000)}); err != nil {
		t.Fatal(err)
	}
	if st.Index() != idx {
		t.Errorf("an identical deploy wrote %d entries", st.Index()-idx)
	}
	// A changed env updates the spec and keeps the old one for rollback.
	if _, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("gs", 5, 4000, "A=2")}); err != nil {
		t.Fatal(err)
	}
	svc, _ = srv.GetService(ctx, &controlv1.GetServiceRequest{Ref: "gs_web"})
	if svc.GetService().GetSpecVersion() != 2 || svc.GetService().GetPreviousSpec() == nil {
		t.Errorf("after a change: spec version %d, previous spec %v", svc.GetService().GetSpecVersion(), svc.GetService().GetPreviousSpec() != nil)
	}
}

func TestDeployStackRefusesTakenPortAndChangesNothing(t *testing.T) {
	srv, st := newServer(t)
	ctx := context.Background()
	if _, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("one", 1, 4000)}); err != nil {
		t.Fatal(err)
	}
	idx := st.Index()
	_, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("two", 1, 4000)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "port '4000' is already in use by service 'one_web'") {
		t.Fatalf("taken port: %v", err)
	}
	if st.Index() != idx {
		t.Error("a refused deploy wrote to the store")
	}
	var nets int
	st.View(func(tx store.ReadTx) {
		n, _ := store.FindNetworks(tx, store.ByStack("two"))
		nets = len(n)
	})
	if nets != 0 {
		t.Error("the refused stack's network was created")
	}
}

func TestRemoveStack(t *testing.T) {
	srv, st := newServer(t)
	ctx := context.Background()
	_, err := srv.RemoveStack(ctx, &controlv1.RemoveStackRequest{Name: "nope"})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "Nothing found in stack: nope") {
		t.Fatalf("unknown stack: %v", err)
	}
	if _, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("gs", 2, 0)}); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.RemoveStack(ctx, &controlv1.RemoveStackRequest{Name: "gs"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(resp.GetActions(), "|") != "Removing service gs_web|Removing network gs_webnet" {
		t.Errorf("actions %q", resp.GetActions())
	}
	st.View(func(tx store.ReadTx) {
		if s, _ := store.FindServices(tx, store.All); len(s) != 0 {
			t.Errorf("services left: %v", s)
		}
	})
	stacks, _ := srv.ListStacks(ctx, &controlv1.ListStacksRequest{})
	if len(stacks.GetStacks()) != 0 {
		t.Errorf("stacks left: %v", stacks.GetStacks())
	}
}

func TestScaleService(t *testing.T) {
	srv, _ := newServer(t)
	ctx := context.Background()
	if _, err := srv.DeployStack(ctx, &controlv1.DeployStackRequest{Stack: webStack("gs", 2, 0)}); err != nil {
		t.Fatal(err)
	}
	out, err := srv.ScaleService(ctx, &controlv1.ScaleServiceRequest{Ref: "gs_web", Replicas: 7})
	if err != nil {
		t.Fatal(err)
	}
	if out.GetService().GetSpec().GetReplicated().GetReplicas() != 7 {
		t.Errorf("replicas %d", out.GetService().GetSpec().GetReplicated().GetReplicas())
	}
	_, err = srv.ScaleService(ctx, &controlv1.ScaleServiceRequest{Ref: "nope", Replicas: 1})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "no such service: nope") {
		t.Errorf("unknown service: %v", err)
	}
}

func TestRotateJoinToken(t *testing.T) {
	s := store.New()
	n := 0
	srv := New(s, store.NewLocalProposer(s), "node1", Hooks{NewToken: func() string { n++; return fmt.Sprintf("SHL-1-x-%d", n) }})
	b := s.NewBatch()
	b.CreateCluster(&typesv1.Cluster{Id: "c1", JoinTokens: &typesv1.JoinTokens{Worker: "SHL-1-x-w0", Manager: "SHL-1-x-m0"}})
	if _, err := store.NewLocalProposer(s).Propose(context.Background(), b.Proto()); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.RotateJoinToken(context.Background(), &controlv1.RotateJoinTokenRequest{Worker: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTokens().GetWorker() != "SHL-1-x-1" || resp.GetTokens().GetManager() != "SHL-1-x-m0" {
		t.Errorf("after rotating the worker token: %v", resp.GetTokens())
	}
	if _, err := srv.RotateJoinToken(context.Background(), &controlv1.RotateJoinTokenRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("rotate without a role: %v", err)
	}
}
