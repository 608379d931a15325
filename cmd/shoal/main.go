// Command shoal is the shoal CLI. All commands live in package cli; this
// file only wires the process (signals, exit code), the compose loader and the
// node API client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-dev/shoal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := cli.NewApp()
	app.LoadStack = loadStack
	app.Node = app.NodeClient()
	code := app.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
