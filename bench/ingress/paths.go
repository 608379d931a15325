package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// taskAddrs returns the tasks' addresses, as dnat.Port.Backends takes
// them.
func taskAddrs(tasks []hostTask) []netip.Addr {
	var out []netip.Addr
	for _, t := range tasks {
		out = append(out, t.addr)
	}
	return out
}

// tableExists tells whether the nftables table (family ip) is there.
func tableExists(name string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	if _, err := c.ListTableOfFamily(name, nftables.TableFamilyIPv4); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// checkPaths makes sure that each target reaches the tasks by the path it
// is named after, before anything is measured, from where wrk will run
// (the namespace clientNs, "" for the node). The userspace balancer
// listens on the published port on every address, as in the product, so
// a kernel table that was not in effect would go unnoticed, and the dnat
// row would measure the balancer. A task's /who tells its name and the
// address the connection came from: a direct or DNATed connection keeps
// the client's (client; on the node, the source the node picks: the
// outside address for a connection to itself), a proxy's dial comes from
// the bridge's address.
func checkPaths(h *host, targets []target, clientNs string, client netip.Addr) error {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialerIn(clientNs)}, Timeout: 2 * time.Second}
	for _, t := range targets {
		wantFrom := h.gw.String()
		switch {
		case t.name == "direct":
			wantFrom = client.String()
		case strings.HasPrefix(t.name, "dnat") && clientNs == "":
			// Connecting to a local address, the node takes it as the
			// source too.
			wantFrom = h.pub.String()
		case strings.HasPrefix(t.name, "dnat"):
			wantFrom = client.String()
		}
		seen := map[string]bool{}
		for range 2 * len(h.tasks) {
			resp, err := c.Get(t.url + "who")
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			name, from, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
			if from != wantFrom {
				return fmt.Errorf("%s: %s answered a connection from %s, want %s: the connection did not take the path it is named after", t.name, name, from, wantFrom)
			}
			seen[name] = true
		}
		names := slices.Sorted(maps.Keys(seen))
		switch {
		case (t.name == "direct" || t.name == "dnat-1") && (len(names) != 1 || names[0] != h.tasks[0].name):
			return fmt.Errorf("%s: answered by %v, want %s alone", t.name, names, h.tasks[0].name)
		case t.name == "dnat" && len(names) != len(h.tasks):
			// numgen inc takes the backends in turn, so 2n connections
			// reach every task.
			return fmt.Errorf("dnat: %d connections answered by %v, want all %d tasks", 2*len(h.tasks), names, len(h.tasks))
		}
	}
	return nil
}
