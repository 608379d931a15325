package main

import (
	"github.com/shoal-dev/shoal/cli"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
	"github.com/shoal-dev/shoal/stack"
)

// loadStack adapts the stack package's compose loader to the CLI, which
// does not import it so that its tests use a fake loader.
func loadStack(name string, o cli.StackLoadOptions) (*typesv1.StackSpec, []string, error) {
	return stack.Load(name, stack.Options{Files: o.Files, Stdin: o.Stdin, WorkingDir: o.WorkingDir, Env: o.Env})
}
