// Command shoal-manager is a shoal manager: Raft member, control API,
// dispatcher, controllers and an embedded agent. `shoal swarm init` starts
// it; after a crash or reboot, start it again with the same --data-dir.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/manager"
)

func main() {
	var cfg manager.Config
	var level string
	flag.StringVar(&cfg.DataDir, "data-dir", "/var/lib/shoal", "state directory (raft log, images, containers, volumes)")
	flag.StringVar(&cfg.RunDir, "run-dir", "/run/shoal", "directory of the control socket and the containers' exec sockets")
	flag.StringVar(&cfg.ListenAddr, "listen-addr", "0.0.0.0:2377", "address the dispatcher listens on (host:port)")
	flag.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "address other nodes reach this one at (host:port; default: the first non-loopback address)")
	flag.StringVar(&cfg.RaftAddr, "raft-addr", "", "address Raft listens on (default: the listen host, port 2378)")
	flag.BoolVar(&cfg.Init, "init", false, "create a new swarm with this node as its first manager")
	flag.StringVar(&cfg.Join, "join", "", "join the swarm of the manager at this address (host:port), with --token")
	flag.StringVar(&cfg.Token, "token", "", "join token (shoal swarm join-token manager)")
	flag.DurationVar(&cfg.CertExpiry, "cert-expiry", 0, "with --init: validity of node certificates (default 90 days; at least 10s)")
	flag.StringVar(&cfg.InitPath, "init-path", "", "shoal-init binary (default: beside this program)")
	flag.StringVar(&cfg.CgroupParent, "cgroup-parent", "shoal", "cgroup under which containers are placed")
	flag.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	if cfg.CertExpiry != 0 && cfg.CertExpiry < 10*time.Second {
		fmt.Fprintf(os.Stderr, "shoal-manager: --cert-expiry %v: at least 10s\n", cfg.CertExpiry)
		os.Exit(2)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(os.Stderr, "shoal-manager: --log-level %q: expected debug, info, warn or error\n", level)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := manager.Run(ctx, cfg)
	if errors.Is(err, manager.ErrRestart) {
		// The node is now a manager or a worker: start again as that,
		// on the same data dir.
		exe, _ := os.Executable()
		stop()
		if xerr := syscall.Exec(exe, restartArgs(os.Args), os.Environ()); xerr != nil {
			fmt.Fprintln(os.Stderr, "shoal-manager: restart:", xerr)
			os.Exit(1)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoal-manager:", err)
		os.Exit(1)
	}
}

// restartArgs are the arguments of a restart after a role change: the
// same, without those that create or join a swarm.
func restartArgs(args []string) []string {
	out := []string{args[0]}
	skip := map[string]bool{"-join": true, "--join": true, "-token": true, "--token": true, "-cert-expiry": true, "--cert-expiry": true}
	for i := 1; i < len(args); i++ {
		a := args[i]
		name, _, hasValue := strings.Cut(a, "=")
		switch {
		case a == "-init" || a == "--init":
		case skip[name] && hasValue:
		case skip[name]:
			i++ // and its value
		default:
			out = append(out, a)
		}
	}
	return out
}
