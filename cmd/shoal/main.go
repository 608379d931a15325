// Command shoal is the shoal CLI. All commands live in package cli; this
// file only wires the process (signals, exit code) and the compose loader.
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
	code := app.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
