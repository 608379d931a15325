package nodeapi

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	"github.com/shoal-dev/shoal/runtime"
	"github.com/shoal-dev/shoal/runtime/logs"
)

// ListContainers implements nodev1.NodeServer.
func (s *Server) ListContainers(_ context.Context, req *nodev1.ListContainersRequest) (*nodev1.ListContainersResponse, error) {
	now := s.now()
	var out []*nodev1.Container
	for _, c := range s.rt.List() { // newest first, as `docker ps`
		if !req.GetAll() && c.State != runtime.Running {
			continue
		}
		out = append(out, &nodev1.Container{
			Id:         c.ID,
			Names:      []string{"/" + c.Name},
			Image:      s.imageName(c),
			ImageId:    c.ImageID,
			Command:    strings.Join(c.Args, " "),
			Created:    timestamppb.New(c.Created),
			State:      string(c.State),
			Status:     statusWords(c, now),
			ExitCode:   int32(c.ExitCode),
			StartedAt:  optionalTime(c.StartedAt),
			FinishedAt: optionalTime(c.FinishedAt),
			Labels:     c.Spec.Labels,
		})
	}
	return &nodev1.ListContainersResponse{Containers: out}, nil
}

// imageName is what `docker ps` shows as IMAGE: the reference the
// container was created from while it still names the container's image,
// else the image ID (the tag moved to a newer image, or was removed).
func (s *Server) imageName(c runtime.Container) string {
	img, err := s.rt.Images().Get(c.Spec.Image)
	if err != nil || img.ID != c.ImageID {
		return c.ImageID
	}
	return c.Spec.Image
}

func optionalTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// statusWords is a container's STATUS in `docker ps`: "Up 5 minutes",
// "Exited (0) 2 minutes ago", "Created".
func statusWords(c runtime.Container, now time.Time) string {
	switch c.State {
	case runtime.Running:
		return "Up " + humanDuration(now.Sub(c.StartedAt))
	case runtime.Exited:
		if c.FinishedAt.IsZero() {
			return fmt.Sprintf("Exited (%d)", c.ExitCode)
		}
		return fmt.Sprintf("Exited (%d) %s ago", c.ExitCode, humanDuration(now.Sub(c.FinishedAt)))
	}
	return "Created"
}

// humanDuration is go-units' HumanDuration, word for word, so that
// statuses read as Docker's. (Copied rather than imported: go-units is
// only an indirect dependency of the module.)
func humanDuration(d time.Duration) string {
	if seconds := int(d.Seconds()); seconds < 1 {
		return "Less than a second"
	} else if seconds == 1 {
		return "1 second"
	} else if seconds < 60 {
		return fmt.Sprintf("%d seconds", seconds)
	} else if minutes := int(d.Minutes()); minutes == 1 {
		return "About a minute"
	} else if minutes < 60 {
		return fmt.Sprintf("%d minutes", minutes)
	} else if hours := int(d.Hours() + 0.5); hours == 1 {
		return "About an hour"
	} else if hours < 48 {
		return fmt.Sprintf("%d hours", hours)
	} else if hours < 24*7*2 {
		return fmt.Sprintf("%d days", hours/24)
	} else if hours < 24*30*2 {
		return fmt.Sprintf("%d weeks", hours/24/7)
	} else if hours < 24*365*2 {
		return fmt.Sprintf("%d months", hours/24/30)
	}
	return fmt.Sprintf("%d years", int(d.Hours())/24/365)
}

// InspectContainer implements nodev1.NodeServer.
func (s *Server) InspectContainer(_ context.Context, req *nodev1.InspectContainerRequest) (*nodev1.InspectContainerResponse, error) {
	c, err := s.rt.Inspect(req.GetRef())
	if err != nil {
		return nil, containerError(err, req.GetRef())
	}
	b, err := s.inspectJSON(c)
	if err != nil {
		return nil, grpcError(err)
	}
	return &nodev1.InspectContainerResponse{Json: b}, nil
}

// logTimeLayout is Docker's log timestamp: fixed width, so that columns
// line up.
const logTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// ContainerLogs implements nodev1.NodeServer.
func (s *Server) ContainerLogs(req *nodev1.ContainerLogsRequest, stream nodev1.Node_ContainerLogsServer) error {
	opts := logs.ReadOptions{Follow: req.GetFollow(), Tail: -1}
	if t := req.GetTail(); t >= 0 {
		opts.Tail = int(t)
	}
	if n := req.GetSinceUnixNano(); n != 0 {
		opts.Since = time.Unix(0, n)
	}
	if n := req.GetUntilUnixNano(); n != 0 {
		opts.Until = time.Unix(0, n)
	}
	wantOut, wantErr := req.GetStdout(), req.GetStderr()
	if !wantOut && !wantErr {
		wantOut, wantErr = true, true
	}
	err := s.rt.Logs(stream.Context(), req.GetRef(), opts, func(e logs.Entry) error {
		if (e.Stream == "stderr" && !wantErr) || (e.Stream != "stderr" && !wantOut) {
			return nil
		}
		line := []byte(e.Log)
		if req.GetTimestamps() {
			line = append([]byte(e.Time.UTC().Format(logTimeLayout)+" "), line...)
		}
		return stream.Send(&nodev1.LogEntry{Stream: e.Stream, Line: line, TimeUnixNano: e.Time.UnixNano()})
	})
	if err != nil {
		if stream.Context().Err() != nil {
			return nil // the client stopped reading
		}
		return containerError(err, req.GetRef())
	}
	return nil
}
