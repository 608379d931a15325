// Command shoal-init is PID 1 of every shoal container. The runtime starts
// it; it is not meant to be run by hand. See package runtime/pid1.
package main

import "github.com/shoal-dev/shoal/runtime/pid1"

func main() { pid1.Main() }
