package nodeapi

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/shoal-dev/shoal/runtime"
)

// The types below give `container inspect` Docker's field names and
// nesting, so that --format templates written for Docker
// ({{.State.Status}}, {{.Config.Env}}, {{json .Mounts}}) work unchanged.
// They hold what the runtime knows; Docker's fields without a counterpart
// here are left out rather than faked.

type inspectContainer struct {
	ID           string            `json:"Id"`
	Created      time.Time         `json:"Created"`
	Path         string            `json:"Path"`
	Args         []string          `json:"Args"`
	State        inspectState      `json:"State"`
	Image        string            `json:"Image"`
	Name         string            `json:"Name"`
	RestartCount int               `json:"RestartCount"`
	Driver       string            `json:"Driver"`
	Platform     string            `json:"Platform"`
	HostConfig   inspectHostConfig `json:"HostConfig"`
	Mounts       []inspectMount    `json:"Mounts"`
	Config       inspectConfig     `json:"Config"`
}

type inspectState struct {
	Status     string    `json:"Status"`
	Running    bool      `json:"Running"`
	Paused     bool      `json:"Paused"`
	Restarting bool      `json:"Restarting"`
	OOMKilled  bool      `json:"OOMKilled"`
	Dead       bool      `json:"Dead"`
	Pid        int       `json:"Pid"`
	ExitCode   int       `json:"ExitCode"`
	Error      string    `json:"Error"`
	StartedAt  time.Time `json:"StartedAt"`
	FinishedAt time.Time `json:"FinishedAt"`
}

type inspectHostConfig struct {
	NetworkMode string           `json:"NetworkMode"`
	LogConfig   inspectLogConfig `json:"LogConfig"`
	CapAdd      []string         `json:"CapAdd"`
	CapDrop     []string         `json:"CapDrop"`
	DNS         []string         `json:"Dns"`
	DNSSearch   []string         `json:"DnsSearch"`
	ExtraHosts  []string         `json:"ExtraHosts"`
	NanoCPUs    int64            `json:"NanoCpus"`
	Memory      int64            `json:"Memory"`
	PidsLimit   *int64           `json:"PidsLimit"`
}

type inspectLogConfig struct {
	Type   string            `json:"Type"`
	Config map[string]string `json:"Config"`
}

type inspectMount struct {
	Type        string `json:"Type"`
	Name        string `json:"Name,omitempty"`
	Source      string `json:"Source"`
	Destination string `json:"Destination"`
	Mode        string `json:"Mode"`
	RW          bool   `json:"RW"`
}

type inspectConfig struct {
	Hostname     string              `json:"Hostname"`
	User         string              `json:"User"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env"`
	Cmd          []string            `json:"Cmd"`
	Image        string              `json:"Image"`
	WorkingDir   string              `json:"WorkingDir"`
	Entrypoint   []string            `json:"Entrypoint"`
	Labels       map[string]string   `json:"Labels"`
	StopSignal   string              `json:"StopSignal,omitempty"`
	StopTimeout  *int                `json:"StopTimeout,omitempty"`
}

// inspectJSON renders c as Docker's `container inspect` object.
func (s *Server) inspectJSON(c runtime.Container) ([]byte, error) {
	sp := c.Spec
	out := inspectContainer{
		ID:       c.ID,
		Created:  c.Created.UTC(),
		Image:    c.ImageID,
		Name:     "/" + c.Name,
		Driver:   "overlay",
		Platform: "linux",
		State: inspectState{
			Status:     string(c.State),
			Running:    c.State == runtime.Running,
			OOMKilled:  c.OOMKilled,
			Pid:        c.Pid,
			ExitCode:   c.ExitCode,
			Error:      c.Error,
			StartedAt:  c.StartedAt.UTC(),
			FinishedAt: c.FinishedAt.UTC(),
		},
		HostConfig: inspectHostConfig{
			NetworkMode: sp.Network.Mode,
			LogConfig:   inspectLogConfig{Type: "json-file", Config: map[string]string{}},
			CapAdd:      sp.CapAdd,
			CapDrop:     sp.CapDrop,
			DNS:         sp.Network.DNS,
			DNSSearch:   sp.Network.DNSSearch,
			ExtraHosts:  sp.Network.ExtraHosts,
			NanoCPUs:    sp.Resources.NanoCPUs,
			Memory:      sp.Resources.MemoryLimit,
		},
		Mounts: []inspectMount{},
		Config: inspectConfig{
			Hostname:   c.Hostname,
			User:       c.User,
			Env:        c.Env,
			Image:      sp.Image,
			WorkingDir: c.WorkingDir,
			Labels:     sp.Labels,
			StopSignal: c.StopSignal,
		},
	}
	if out.HostConfig.NetworkMode == "" {
		out.HostConfig.NetworkMode = runtime.NetworkNone
	}
	if len(c.Args) > 0 {
		out.Path, out.Args = c.Args[0], c.Args[1:]
	}
	if sp.Resources.PidsLimit > 0 {
		out.HostConfig.PidsLimit = &sp.Resources.PidsLimit
	}
	if sp.Log.MaxSize > 0 {
		out.HostConfig.LogConfig.Config["max-size"] = strconv.FormatInt(sp.Log.MaxSize, 10)
	}
	if sp.Log.MaxFiles > 0 {
		out.HostConfig.LogConfig.Config["max-file"] = strconv.Itoa(sp.Log.MaxFiles)
	}
	if sp.StopTimeout != nil {
		secs := int(sp.StopTimeout.Seconds())
		out.Config.StopTimeout = &secs
	}
	for _, m := range sp.Mounts {
		im := inspectMount{Type: m.Type, Source: m.Source, Destination: m.Target, RW: !m.ReadOnly}
		if m.Type == runtime.MountVolume {
			// The runtime keeps the volume's host path to itself; the name
			// is what a user refers to.
			im.Name, im.Source = m.Source, ""
		}
		out.Mounts = append(out.Mounts, im)
	}
	// Config holds the effective Entrypoint and Cmd, as Docker's does: the
	// spec's where it set them, else the image's (Docker's rule that a new
	// Entrypoint drops the image's Cmd included).
	img, err := s.rt.Images().Get(c.ImageID)
	switch {
	case sp.Entrypoint != nil:
		out.Config.Entrypoint, out.Config.Cmd = sp.Entrypoint, sp.Cmd
	case err != nil:
		out.Config.Cmd = sp.Cmd
	case sp.Cmd != nil:
		out.Config.Entrypoint, out.Config.Cmd = img.Config.Entrypoint, sp.Cmd
	default:
		out.Config.Entrypoint, out.Config.Cmd = img.Config.Entrypoint, img.Config.Cmd
	}
	if err == nil && len(img.Config.ExposedPorts) > 0 {
		out.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range img.Config.ExposedPorts {
			out.Config.ExposedPorts[p] = struct{}{}
		}
	}
	return json.Marshal(out)
}
