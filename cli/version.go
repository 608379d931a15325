package cli

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
)

func (a *App) newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the shoal version information",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.Stdout, "Client:\n Version:           %s\n Go version:        %s\n Git commit:        %s\n OS/Arch:           %s/%s\n",
				Version, runtime.Version(), GitCommit, runtime.GOOS, runtime.GOARCH)
			// Like `docker version`, the server part needs a manager; the
			// client part is printed first so it is there either way.
			c, err := a.control()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			info, err := c.Info(ctx, &controlv1.InfoRequest{})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "\nServer:\n Version:           %s\n Node ID:           %s\n Manager:           %t\n Raft state:        %s\n",
				info.GetVersion(), info.GetNodeId(), info.GetIsManager(), info.GetRaftState())
			return nil
		},
	}
}
