package exec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"time"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/runtime"
)

// Labels Docker puts on a task's container; tools that list a swarm's
// containers (and users' scripts) filter on them.
const (
	LabelTaskID         = "com.docker.swarm.task.id"
	LabelTaskName       = "com.docker.swarm.task.name"
	LabelServiceID      = "com.docker.swarm.service.id"
	LabelServiceName    = "com.docker.swarm.service.name"
	LabelNodeID         = "com.docker.swarm.node.id"
	LabelStackNamespace = "com.docker.stack.namespace"
)

// DefaultStopGracePeriod is how long a task gets between its stop signal
// and SIGKILL when its spec says nothing, as in Docker.
const DefaultStopGracePeriod = 10 * time.Second

// ContainerName is the name of a task's container, "<task name>.<task
// id>" as Docker names it (getstartedlab_web.1.<id>); the ID makes it
// unique among the slot's successive tasks.
func ContainerName(t *typesv1.Task) string {
	if n := t.GetAnnotations().GetName(); n != "" {
		return n + "." + t.Id
	}
	return t.Id
}

// ContainerSpec converts a task into the runtime's container spec. net is
// the network the executor's Network hook chose; the task's extra hosts
// and DNS settings are added to it. It fails with ErrUnsupported for what
// the runtime cannot do yet, since running a task without (say) its
// read-only root filesystem or its secrets would be worse than not running
// it.
func ContainerSpec(t *typesv1.Task, net runtime.Network) (runtime.Spec, error) {
	cs := t.GetSpec().GetContainer()
	if cs == nil {
		return runtime.Spec{}, fmt.Errorf("%w: task %s has no container spec", runtime.ErrInvalid, t.Id)
	}
	if err := unsupported(cs); err != nil {
		return runtime.Spec{}, err
	}
	s := runtime.Spec{
		Name:       ContainerName(t),
		Image:      cs.Image,
		Entrypoint: nonEmpty(cs.Command),
		Cmd:        nonEmpty(cs.Args),
		Env:        nonEmpty(cs.Env),
		WorkingDir: cs.Dir,
		User:       cs.User,
		// Empty leaves the runtime's default, the container ID's first 12
		// characters, as Docker does.
		Hostname:   cs.Hostname,
		Labels:     taskLabels(t),
		StopSignal: cs.StopSignal,
		CapAdd:     nonEmpty(cs.CapAdd),
		CapDrop:    nonEmpty(cs.CapDrop),
	}
	// The grace period is recorded with the container so that a stop
	// after an agent restart (or of an orphan known only from its labels)
	// still honours it.
	grace := DefaultStopGracePeriod
	if d := cs.GetStopGracePeriod(); d != nil {
		grace = d.AsDuration()
	}
	s.StopTimeout = &grace

	res := t.GetSpec().GetResources()
	s.Resources = runtime.Resources{
		NanoCPUs:          res.GetLimits().GetNanoCpus(),
		MemoryLimit:       res.GetLimits().GetMemoryBytes(),
		PidsLimit:         res.GetLimits().GetPids(),
		NanoCPUsReserved:  res.GetReservations().GetNanoCpus(),
		MemoryReservation: res.GetReservations().GetMemoryBytes(),
	}

	for i, m := range cs.Mounts {
		rm, err := mount(t, i, m)
		if err != nil {
			return runtime.Spec{}, err
		}
		s.Mounts = append(s.Mounts, rm)
	}

	hosts, err := extraHosts(cs.Hosts)
	if err != nil {
		return runtime.Spec{}, err
	}
	net.ExtraHosts = append(net.ExtraHosts, hosts...)
	if d := cs.GetDnsConfig(); d != nil {
		net.DNS = append(net.DNS, d.Nameservers...)
		net.DNSSearch = append(net.DNSSearch, d.Search...)
	}
	s.Network = net

	if l := t.GetSpec().GetLog(); l != nil {
		s.Log = runtime.LogConfig{MaxSize: l.MaxSize, MaxFiles: int(l.MaxFiles)}
	}
	return s, nil
}

func unsupported(cs *typesv1.ContainerSpec) error {
	var what []string
	if cs.ReadOnly {
		what = append(what, "a read-only root filesystem")
	}
	if len(cs.Secrets) > 0 {
		what = append(what, "secrets")
	}
	if len(cs.Configs) > 0 {
		what = append(what, "configs")
	}
	if len(cs.Sysctls) > 0 {
		what = append(what, "sysctls")
	}
	if len(what) == 0 {
		return nil
	}
	return &classError{class: ErrUnsupported, err: fmt.Errorf("this node cannot run tasks with %s yet", strings.Join(what, ", "))}
}

// taskLabels are the container's own labels with Docker's swarm labels
// over them, so that a user label cannot pose as another task.
func taskLabels(t *typesv1.Task) map[string]string {
	l := maps.Clone(t.GetSpec().GetContainer().GetLabels())
	if l == nil {
		l = map[string]string{}
	}
	l[LabelTaskID] = t.Id
	l[LabelTaskName] = t.GetAnnotations().GetName()
	l[LabelServiceID] = t.ServiceId
	l[LabelServiceName] = t.GetServiceAnnotations().GetName()
	l[LabelNodeID] = t.NodeId
	if ns, ok := t.GetServiceAnnotations().GetLabels()[LabelStackNamespace]; ok {
		l[LabelStackNamespace] = ns
	}
	return l
}

func mount(t *typesv1.Task, i int, m *typesv1.Mount) (runtime.Mount, error) {
	rm := runtime.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
	switch m.Type {
	case typesv1.Mount_TYPE_BIND:
		rm.Type = runtime.MountBind
	case typesv1.Mount_TYPE_VOLUME:
		rm.Type = runtime.MountVolume
		if rm.Source == "" {
			rm.Source = anonymousVolume(t, m.Target)
		}
	case typesv1.Mount_TYPE_TMPFS:
		rm.Type, rm.TmpfsSize, rm.TmpfsMode = runtime.MountTmpfs, m.TmpfsSizeBytes, m.TmpfsMode
	default:
		return runtime.Mount{}, fmt.Errorf("%w: mount %d (%s): unknown type %v", runtime.ErrInvalid, i+1, m.Target, m.Type)
	}
	return rm, nil
}

// anonymousVolume names the volume of a mount without a source. Docker
// makes a random name; deriving it from the task and target instead means
// a task prepared again after an agent restart finds the same volume.
func anonymousVolume(t *typesv1.Task, target string) string {
	h := sha256.Sum256([]byte(t.Id + "\x00" + target))
	return hex.EncodeToString(h[:])
}

// extraHosts turns the service's "IP NAME [NAME…]" entries (Docker's
// swarm form) into the runtime's "NAME:IP", one per name.
func extraHosts(hosts []string) ([]string, error) {
	var out []string
	for _, h := range hosts {
		f := strings.Fields(h)
		if len(f) < 2 {
			return nil, fmt.Errorf("%w: invalid extra host %q (expected \"IP NAME\")", runtime.ErrInvalid, h)
		}
		for _, name := range f[1:] {
			out = append(out, name+":"+f[0])
		}
	}
	return out, nil
}

// nonEmpty keeps the runtime's rule that a nil list means "the image's":
// protobuf gives nil for an empty list already, but a caller building a
// task by hand may not.
func nonEmpty(v []string) []string {
	if len(v) == 0 {
		return nil
	}
	return v
}
