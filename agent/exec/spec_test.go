package exec

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
)

// fullTask uses every field the conversion reads.
func fullTask() *typesv1.Task {
	return &typesv1.Task{
		Id:          "tid1",
		ServiceId:   "sid1",
		NodeId:      "nid1",
		Slot:        1,
		Annotations: &typesv1.Annotations{Name: "getstartedlab_web.1"},
		ServiceAnnotations: &typesv1.Annotations{
			Name:   "getstartedlab_web",
			Labels: map[string]string{LabelStackNamespace: "getstartedlab", "other": "x"},
		},
		DesiredState: typesv1.TaskState_TASK_STATE_RUNNING,
		Spec: &typesv1.TaskSpec{
			Container: &typesv1.ContainerSpec{
				Image:           "web:v1",
				Labels:          map[string]string{"app": "web", LabelTaskID: "forged"},
				Command:         []string{"/bin/helper"},
				Args:            []string{"sleep", "inf"},
				Hostname:        "web-host",
				Env:             []string{"A=1"},
				Dir:             "/srv",
				User:            "app",
				StopGracePeriod: durationpb.New(3 * time.Second),
				StopSignal:      "SIGINT",
				Hosts:           []string{"10.0.0.1 db db.local", "::1 six"},
				DnsConfig:       &typesv1.DNSConfig{Nameservers: []string{"1.1.1.1"}, Search: []string{"example.com"}},
				CapAdd:          []string{"NET_ADMIN"},
				CapDrop:         []string{"MKNOD"},
				Mounts: []*typesv1.Mount{
					{Type: typesv1.Mount_TYPE_VOLUME, Source: "data", Target: "/data", ReadOnly: true},
					{Type: typesv1.Mount_TYPE_BIND, Source: "/srv/www", Target: "/www"},
					{Type: typesv1.Mount_TYPE_TMPFS, Target: "/tmp", TmpfsSizeBytes: 1 << 20, TmpfsMode: 0o1777},
				},
			},
			Resources: &typesv1.ResourceRequirements{
				Limits:       &typesv1.Resources{NanoCpus: 5e8, MemoryBytes: 50 << 20, Pids: 100},
				Reservations: &typesv1.Resources{NanoCpus: 1e8, MemoryBytes: 20 << 20},
			},
			Log: &typesv1.LogConfig{MaxSize: 1 << 20, MaxFiles: 2},
		},
	}
}

func TestContainerSpecFull(t *testing.T) {
	got, err := ContainerSpec(fullTask(), runtime.Network{Mode: runtime.NetworkNone})
	if err != nil {
		t.Fatal(err)
	}
	grace := 3 * time.Second
	want := runtime.Spec{
		Name:       "getstartedlab_web.1.tid1",
		Image:      "web:v1",
		Entrypoint: []string{"/bin/helper"},
		Cmd:        []string{"sleep", "inf"},
		Env:        []string{"A=1"},
		WorkingDir: "/srv",
		User:       "app",
		Hostname:   "web-host",
		Labels: map[string]string{
			"app":               "web",
			LabelTaskID:         "tid1",
			LabelTaskName:       "getstartedlab_web.1",
			LabelServiceID:      "sid1",
			LabelServiceName:    "getstartedlab_web",
			LabelNodeID:         "nid1",
			LabelStackNamespace: "getstartedlab",
		},
		StopSignal:  "SIGINT",
		StopTimeout: &grace,
		Resources: runtime.Resources{
			NanoCPUs: 5e8, MemoryLimit: 50 << 20, PidsLimit: 100,
			NanoCPUsReserved: 1e8, MemoryReservation: 20 << 20,
		},
		Mounts: []runtime.Mount{
			{Type: runtime.MountVolume, Source: "data", Target: "/data", ReadOnly: true},
			{Type: runtime.MountBind, Source: "/srv/www", Target: "/www"},
			{Type: runtime.MountTmpfs, Target: "/tmp", TmpfsSize: 1 << 20, TmpfsMode: 0o1777},
		},
		Network: runtime.Network{
			Mode:       runtime.NetworkNone,
			ExtraHosts: []string{"db:10.0.0.1", "db.local:10.0.0.1", "six:::1"},
			DNS:        []string{"1.1.1.1"},
			DNSSearch:  []string{"example.com"},
		},
		Log:     runtime.LogConfig{MaxSize: 1 << 20, MaxFiles: 2},
		CapAdd:  []string{"NET_ADMIN"},
		CapDrop: []string{"MKNOD"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("spec\n got %+v\nwant %+v", got, want)
	}
}

func TestContainerSpecDefaults(t *testing.T) {
	task := &typesv1.Task{Id: "tid2", Spec: &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{Image: "x", Command: []string{}}}}
	got, err := ContainerSpec(task, runtime.Network{Mode: runtime.NetworkHost})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "tid2" || got.Hostname != "" || got.Entrypoint != nil || got.Cmd != nil {
		t.Errorf("name %q hostname %q entrypoint %v cmd %v: want the task ID, empty and nil (the image's)", got.Name, got.Hostname, got.Entrypoint, got.Cmd)
	}
	if got.StopTimeout == nil || *got.StopTimeout != 10*time.Second {
		t.Errorf("stop timeout %v, want 10s", got.StopTimeout)
	}
	if _, ok := got.Labels[LabelStackNamespace]; ok {
		t.Error("stack label set on a task outside a stack")
	}
	if got.Network.Mode != runtime.NetworkHost {
		t.Errorf("network %+v", got.Network)
	}

	task.Spec.Container.Mounts = []*typesv1.Mount{{Type: typesv1.Mount_TYPE_VOLUME, Target: "/v"}}
	a, _ := ContainerSpec(task, runtime.Network{})
	b, _ := ContainerSpec(task, runtime.Network{})
	if a.Mounts[0].Source == "" || a.Mounts[0].Source != b.Mounts[0].Source {
		t.Errorf("anonymous volume names %q, %q: want one stable name", a.Mounts[0].Source, b.Mounts[0].Source)
	}
}

func TestContainerSpecRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*typesv1.ContainerSpec)
		class error
		text  string
	}{
		{"read-only rootfs", func(c *typesv1.ContainerSpec) { c.ReadOnly = true }, ErrUnsupported, "read-only root filesystem"},
		{"secrets", func(c *typesv1.ContainerSpec) { c.Secrets = []*typesv1.SecretReference{{SecretName: "s"}} }, ErrUnsupported, "secrets"},
		{"sysctls", func(c *typesv1.ContainerSpec) { c.Sysctls = map[string]string{"a": "1"} }, ErrUnsupported, "sysctls"},
		{"bad host", func(c *typesv1.ContainerSpec) { c.Hosts = []string{"10.0.0.1"} }, runtime.ErrInvalid, `invalid extra host "10.0.0.1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := fullTask()
			tc.edit(task.Spec.Container)
			_, err := ContainerSpec(task, runtime.Network{})
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %v, want %v containing %q", err, tc.class, tc.text)
			}
		})
	}
}

func TestDefaultNetwork(t *testing.T) {
	for mode, want := range map[string]string{"host": runtime.NetworkHost, "": runtime.NetworkNone, "none": runtime.NetworkNone, "bridge": runtime.NetworkNone} {
		n, err := DefaultNetwork(&typesv1.Task{Spec: &typesv1.TaskSpec{Container: &typesv1.ContainerSpec{NetworkMode: mode}}})
		if err != nil || n.Mode != want {
			t.Errorf("mode %q: %+v, %v; want %s", mode, n, err, want)
		}
	}
}
