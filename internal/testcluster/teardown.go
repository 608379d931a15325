package testcluster

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// killTimeout bounds how long teardown waits for SIGKILLed processes to
// go; only a process stuck in the kernel takes longer.
const killTimeout = 10 * time.Second

// teardown removes everything the cluster of r made on the host, in the
// order that lets each step succeed: the nodes' processes (which may
// hold mounts busy and fork while dying), the mounts under the nodes'
// dirs (containers' rootfs, pinned namespaces), the links (a veth's host
// end takes the node's end with it), the namespace pins, the dirs.
// It finishes what it can when a step fails, and keeps r's record when
// anything is left, so that a later run tries again.
func teardown(r *record) error {
	var errs []error
	all := func() scope {
		s := scope{netns: map[uint64]bool{}}
		for _, n := range r.Nodes {
			s = s.merge(n.scope())
		}
		return s
	}
	if err := killScope(all, killTimeout); err != nil {
		errs = append(errs, err)
	}
	for _, n := range r.Nodes {
		if err := unmountUnder(n.dirs()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		}
	}
	names := []string{r.Bridge}
	for _, n := range r.Nodes {
		names = append(names, n.Link)
	}
	if err := deleteLinks(r.Prefix, names...); err != nil {
		errs = append(errs, err)
	}
	for _, n := range r.Nodes {
		if err := deleteNetns(n.NetnsPath); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		}
		for _, d := range n.dirs() {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.RemoveAll(r.dir())
}
