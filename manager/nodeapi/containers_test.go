package nodeapi

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/runtime"
)

func TestStatusWords(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		c    runtime.Container
		now  time.Duration
		want string
	}{
		{runtime.Container{State: runtime.Running, StartedAt: t0}, 300 * time.Millisecond, "Up Less than a second"},
		{runtime.Container{State: runtime.Running, StartedAt: t0}, 5*time.Minute + 30*time.Second, "Up 5 minutes"},
		{runtime.Container{State: runtime.Running, StartedAt: t0}, 70 * time.Second, "Up About a minute"},
		{runtime.Container{State: runtime.Running, StartedAt: t0}, 3 * 24 * time.Hour, "Up 3 days"},
		{runtime.Container{State: runtime.Exited, ExitCode: 0, StartedAt: t0, FinishedAt: t0}, 2 * time.Minute, "Exited (0) 2 minutes ago"},
		{runtime.Container{State: runtime.Exited, ExitCode: 137, StartedAt: t0, FinishedAt: t0}, 50 * time.Minute, "Exited (137) 50 minutes ago"},
		{runtime.Container{State: runtime.Exited, ExitCode: 1}, time.Hour, "Exited (1)"},
		{runtime.Container{State: runtime.Created}, time.Hour, "Created"},
	} {
		if got := statusWords(tc.c, t0.Add(tc.now)); got != tc.want {
			t.Errorf("%s after %v: %q, want %q", tc.c.State, tc.now, got, tc.want)
		}
	}
}
