package runtime

import (
	"time"

	"github.com/shoal-dev/shoal/runtime/cgroups"
)

// Spec describes a container to create. Empty fields take the image's
// defaults (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal) or Docker's.
type Spec struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Entrypoint replaces the image's; when set, the image's Cmd is not
	// used either (Docker's rule).
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Cmd        []string          `json:"cmd,omitempty"`
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
	User       string            `json:"user,omitempty"`
	Hostname   string            `json:"hostname,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// StopSignal is a name ("SIGTERM", "TERM") or number.
	StopSignal  string         `json:"stop_signal,omitempty"`
	StopTimeout *time.Duration `json:"stop_timeout,omitempty"`

	Resources Resources `json:"resources"`
	Mounts    []Mount   `json:"mounts,omitempty"`
	Network   Network   `json:"network"`
	Log       LogConfig `json:"log"`

	CapAdd  []string `json:"cap_add,omitempty"`
	CapDrop []string `json:"cap_drop,omitempty"`
}

// Resources are the container's limits and reservations. Reservations are
// not enforced by the kernel here; they are recorded for the scheduler.
type Resources struct {
	NanoCPUs          int64 `json:"nano_cpus,omitempty"` // 1e9 = one CPU
	MemoryLimit       int64 `json:"memory_limit,omitempty"`
	PidsLimit         int64 `json:"pids_limit,omitempty"`
	NanoCPUsReserved  int64 `json:"nano_cpus_reserved,omitempty"`
	MemoryReservation int64 `json:"memory_reservation,omitempty"`
}

// Mount types.
const (
	MountBind   = "bind"
	MountVolume = "volume"
	MountTmpfs  = "tmpfs"
)

// Mount is a bind mount, a named volume or a tmpfs.
type Mount struct {
	Type string `json:"type"`
	// Source is a host path for bind, a volume name for volume.
	Source    string `json:"source,omitempty"`
	Target    string `json:"target"`
	ReadOnly  bool   `json:"read_only,omitempty"`
	TmpfsSize int64  `json:"tmpfs_size,omitempty"`
	TmpfsMode uint32 `json:"tmpfs_mode,omitempty"`
}

// Network modes.
const (
	NetworkNone = "none"
	NetworkHost = "host"
	// NetworkNamespace joins a namespace prepared by the network package.
	NetworkNamespace = "ns"
)

// Network says which network namespace the container gets.
type Network struct {
	Mode       string   `json:"mode"`
	Path       string   `json:"path,omitempty"`        // for NetworkNamespace
	ExtraHosts []string `json:"extra_hosts,omitempty"` // "name:ip"
	// IP is the container's own address, written to /etc/hosts.
	IP        string   `json:"ip,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	DNSSearch []string `json:"dns_search,omitempty"`
}

// LogConfig bounds the container's log; zero means the defaults (10 MB × 3).
type LogConfig struct {
	MaxSize  int64 `json:"max_size,omitempty"`
	MaxFiles int   `json:"max_files,omitempty"`
}

// State of a container.
type State string

// Container states.
const (
	Created State = "created"
	Running State = "running"
	Exited  State = "exited"
)

// Container is what the runtime knows of one container; it is also the
// record kept on disk.
type Container struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	ImageID string    `json:"image_id"`
	Spec    Spec      `json:"spec"`
	Created time.Time `json:"created"`

	// Resolved from the spec and the image.
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	WorkingDir string   `json:"working_dir"`
	User       string   `json:"user"`
	Hostname   string   `json:"hostname"`
	StopSignal string   `json:"stop_signal"`

	State      State     `json:"state"`
	Pid        int       `json:"pid,omitempty"` // host pid of the container's init
	PidStart   uint64    `json:"pid_start,omitempty"`
	StartedAt  time.Time `json:"started_at,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitempty"`
	ExitCode   int       `json:"exit_code"`
	OOMKilled  bool      `json:"oom_killed,omitempty"`
	Error      string    `json:"error,omitempty"`
}

// Exit is how a container ended.
type Exit struct {
	Code       int
	OOMKilled  bool
	FinishedAt time.Time
}

// Stats are a running container's resource usage.
type Stats = cgroups.Stats

// Process is one process of a running container, for `top`.
type Process struct {
	Pid  int // host pid
	PPid int
	UID  int
	Cmd  string
}
