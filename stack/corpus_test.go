package stack

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// corpusDir finds the shared compose corpus: $SHOAL_COMPOSE_CORPUS, else
// ../../shared/compose beside the repository.
func corpusDir(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{os.Getenv("SHOAL_COMPOSE_CORPUS"), filepath.Join("..", "..", "shared", "compose"), "/work/shared/compose"} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "getstartedlab.yml")); err == nil {
			return dir
		}
	}
	t.Skip("compose corpus not found (set SHOAL_COMPOSE_CORPUS)")
	return ""
}

// Fixture lookups: they fail the test rather than return nil.

func service(t *testing.T, spec *typesv1.StackSpec, name string) *typesv1.ServiceSpec {
	t.Helper()
	for _, s := range spec.Services {
		if s.Annotations.Name == name {
			return s
		}
	}
	t.Fatalf("no service %s in %v", name, serviceNames(spec))
	return nil
}

func serviceNames(spec *typesv1.StackSpec) []string {
	var names []string
	for _, s := range spec.Services {
		names = append(names, s.Annotations.Name)
	}
	return names
}

func networkNames(spec *typesv1.StackSpec) []string {
	var names []string
	for _, n := range spec.Networks {
		names = append(names, n.Annotations.Name)
	}
	return names
}

func targets(atts []*typesv1.NetworkAttachmentConfig) []string {
	var out []string
	for _, a := range atts {
		out = append(out, a.Target)
	}
	return out
}

func replicas(t *testing.T, s *typesv1.ServiceSpec) uint64 {
	t.Helper()
	r := s.GetReplicated()
	if r == nil {
		t.Fatalf("%s is not replicated", s.Annotations.Name)
	}
	return r.Replicas
}

func equal[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func equalSlice[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestCorpus(t *testing.T) {
	dir := corpusDir(t)
	tests := []struct {
		file  string
		stack string
		check func(t *testing.T, spec *typesv1.StackSpec, warnings []string)
	}{
		{"getstartedlab.yml", "getstartedlab", func(t *testing.T, spec *typesv1.StackSpec, warnings []string) {
			equalSlice(t, "warnings", warnings, nil)
			equalSlice(t, "services", serviceNames(spec), []string{"getstartedlab_web"})
			web := service(t, spec, "getstartedlab_web")
			equal(t, "replicas", replicas(t, web), 5)
			equal(t, "image", web.Task.Container.Image, "zoeminghong/docker-demp:v1.0.0")
			equal(t, "image label", web.Annotations.Labels[LabelImage], "zoeminghong/docker-demp:v1.0.0")
			equal(t, "namespace label", web.Annotations.Labels[LabelNamespace], "getstartedlab")
			equal(t, "container namespace label", web.Task.Container.Labels[LabelNamespace], "getstartedlab")
			equal(t, "nano cpus", web.Task.Resources.Limits.NanoCpus, 100000000)
			equal(t, "memory", web.Task.Resources.Limits.MemoryBytes, 52428800)
			equal(t, "restart", web.Task.Restart.Condition, typesv1.RestartPolicy_CONDITION_ON_FAILURE)
			equal(t, "restart delay", web.Task.Restart.Delay.AsDuration(), 5*time.Second)
			if len(web.Endpoint.Ports) != 1 {
				t.Fatalf("ports = %v", web.Endpoint.Ports)
			}
			p := web.Endpoint.Ports[0]
			equal(t, "published", p.PublishedPort, 4000)
			equal(t, "target", p.TargetPort, 80)
			equal(t, "protocol", p.Protocol, typesv1.PortConfig_PROTOCOL_TCP)
			equal(t, "publish mode", p.PublishMode, typesv1.PortConfig_PUBLISH_MODE_INGRESS)
			equalSlice(t, "service networks", targets(web.Task.Networks), []string{"getstartedlab_webnet"})
			equalSlice(t, "aliases", web.Task.Networks[0].Aliases, []string{"web"})
			equalSlice(t, "networks", networkNames(spec), []string{"getstartedlab_webnet"})
			equal(t, "driver", spec.Networks[0].Driver, "overlay")
			equal(t, "network label", spec.Networks[0].Annotations.Labels[LabelNamespace], "getstartedlab")
		}},
		{"voting-app-docker-stack.yml", "voting", func(t *testing.T, spec *typesv1.StackSpec, warnings []string) {
			// docker stack deploy ignores depends_on; we say so.
			equalSlice(t, "warnings", warnings, []string{"Ignoring unsupported options: depends_on"})
			equalSlice(t, "services", serviceNames(spec), []string{
				"voting_db", "voting_redis", "voting_result", "voting_visualizer", "voting_vote", "voting_worker"})
			equalSlice(t, "networks", networkNames(spec), []string{"voting_backend", "voting_default", "voting_frontend"})

			db := service(t, spec, "voting_db")
			equalSlice(t, "db constraints", db.Task.Placement.Constraints, []string{"node.role == manager"})
			if m := db.Task.Container.Mounts; len(m) != 1 || m[0].Type != typesv1.Mount_TYPE_VOLUME ||
				m[0].Source != "voting_db-data" || m[0].Target != "/var/lib/postgresql/data" {
				t.Errorf("db mounts = %v", m)
			}
			equal(t, "db replicas", replicas(t, db), 1)

			redis := service(t, spec, "voting_redis")
			equal(t, "redis replicas", replicas(t, redis), 2)
			equal(t, "redis parallelism", redis.Update.Parallelism, 2)
			equal(t, "redis update delay", redis.Update.Delay.AsDuration(), 10*time.Second)
			if p := redis.Endpoint.Ports; len(p) != 1 || p[0].TargetPort != 6379 || p[0].PublishedPort != 0 {
				t.Errorf("redis ports = %v (want 6379 with no published side)", p)
			}

			vote := service(t, spec, "voting_vote")
			equal(t, "vote parallelism", vote.Update.Parallelism, 2)
			equal(t, "vote update delay", vote.Update.Delay.AsDuration(), 0)

			worker := service(t, spec, "voting_worker")
			equal(t, "worker deploy label", worker.Annotations.Labels["APP"], "VOTING")
			equalSlice(t, "worker networks", targets(worker.Task.Networks), []string{"voting_backend", "voting_frontend"})
			r := worker.Task.Restart
			equal(t, "worker restart", r.Condition, typesv1.RestartPolicy_CONDITION_ON_FAILURE)
			equal(t, "worker restart delay", r.Delay.AsDuration(), 10*time.Second)
			equal(t, "worker max attempts", r.MaxAttempts, 3)
			equal(t, "worker window", r.Window.AsDuration(), 120*time.Second)

			vis := service(t, spec, "voting_visualizer")
			if m := vis.Task.Container.Mounts; len(m) != 1 || m[0].Type != typesv1.Mount_TYPE_BIND ||
				m[0].Source != "/var/run/docker.sock" || m[0].Target != "/var/run/docker.sock" {
				t.Errorf("visualizer mounts = %v", m)
			}
			equal(t, "visualizer grace", vis.Task.Container.StopGracePeriod.AsDuration(), 90*time.Second)
			equalSlice(t, "visualizer networks", targets(vis.Task.Networks), []string{"voting_default"})
		}},
		{"atsea/docker-stack.yml", "atsea", func(t *testing.T, spec *typesv1.StackSpec, warnings []string) {
			equalSlice(t, "warnings", warnings, nil)
			if len(spec.Secrets) != 1 {
				t.Fatalf("secrets = %v", spec.Secrets)
			}
			sec := spec.Secrets[0]
			equal(t, "secret name", sec.Annotations.Name, "atsea_postgres_password")
			equal(t, "secret data", strings.TrimSpace(string(sec.Data)), "gordonpass")
			equal(t, "secret label", sec.Annotations.Labels[LabelNamespace], "atsea")

			for _, name := range []string{"atsea_database", "atsea_appserver"} {
				refs := service(t, spec, name).Task.Container.Secrets
				if len(refs) != 1 {
					t.Fatalf("%s secrets = %v", name, refs)
				}
				equal(t, name+" secret", refs[0].SecretName, "atsea_postgres_password")
				equal(t, name+" secret target", refs[0].File.Name, "/run/secrets/postgres_password")
				equal(t, name+" secret mode", refs[0].File.Mode, 0o444)
			}
			db := service(t, spec, "atsea_database")
			equalSlice(t, "database env", db.Task.Container.Env, []string{
				"POSTGRES_DB=atsea", "POSTGRES_DB_PASSWORD_FILE=/run/secrets/postgres_password", "POSTGRES_USER=gordonuser"})

			app := service(t, spec, "atsea_appserver")
			equal(t, "appserver replicas", replicas(t, app), 2)
			equalSlice(t, "appserver networks", targets(app.Task.Networks), []string{"atsea_back-tier", "atsea_front-tier"})
			equal(t, "appserver restart delay", app.Task.Restart.Delay.AsDuration(), 5*time.Second)
			equal(t, "appserver window", app.Task.Restart.Window.AsDuration(), 120*time.Second)

			vis := service(t, spec, "atsea_visualizer")
			equal(t, "visualizer grace", vis.Task.Container.StopGracePeriod.AsDuration(), 90*time.Second)
			equalSlice(t, "visualizer constraints", vis.Task.Placement.Constraints, []string{"node.role == manager"})
			equalSlice(t, "networks", networkNames(spec), []string{"atsea_back-tier", "atsea_default", "atsea_front-tier"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			if _, err := os.Stat(path); err != nil {
				t.Skipf("corpus file missing: %v", err)
			}
			spec, warnings, err := Load(tt.stack, Options{Files: []string{path}})
			if err != nil {
				t.Fatal(err)
			}
			equal(t, "stack name", spec.Name, tt.stack)
			tt.check(t, spec, warnings)
		})
	}
}
