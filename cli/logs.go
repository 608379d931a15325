package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	controlv1 "github.com/shoal-dev/shoal/proto/control/v1"
)

// rfc3339NanoFixed is docker's log timestamp layout: fixed width, so that
// columns line up.
const rfc3339NanoFixed = "2006-01-02T15:04:05.000000000Z07:00"

type logsOptions struct {
	follow     bool
	tail       string
	since      string
	timestamps bool
	noTrunc    bool
	noTaskIDs  bool
	noResolve  bool
	raw        bool
}

func (a *App) newServiceLogsCommand() *cobra.Command {
	var o logsOptions
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] SERVICE|TASK",
		Short: "Fetch the logs of a service or task",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runServiceLogs(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.follow, "follow", "f", false, "Follow log output")
	f.StringVarP(&o.tail, "tail", "n", "all", "Number of lines to show from the end of the logs")
	f.StringVar(&o.since, "since", "", `Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)`)
	f.BoolVarP(&o.timestamps, "timestamps", "t", false, "Show timestamps")
	f.BoolVar(&o.noTrunc, "no-trunc", false, "Do not truncate output")
	f.BoolVar(&o.noTaskIDs, "no-task-ids", false, "Do not include task IDs in output")
	f.BoolVar(&o.noResolve, "no-resolve", false, "Do not map IDs to Names in output")
	f.BoolVar(&o.raw, "raw", false, "Do not neatly format logs")
	return cmd
}

// parseTail accepts "all" (or a negative number) and N.
func parseTail(s string) (int64, error) {
	if s == "" || s == "all" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid value for \"tail\": %q is not a number or \"all\"", s)
	}
	if n < 0 {
		return -1, nil
	}
	return n, nil
}

// parseSince accepts what docker's --since accepts: a duration back from
// now ("42m"), an RFC 3339 time or date, or Unix seconds ("1700000000.5").
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if sec, frac, ok := strings.Cut(s, "."); ok || sec != "" {
		secs, err := strconv.ParseInt(sec, 10, 64)
		if err == nil {
			var nanos int64
			if ok {
				frac = (frac + "000000000")[:9]
				nanos, err = strconv.ParseInt(frac, 10, 64)
			}
			if err == nil {
				return time.Unix(secs, nanos), nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("invalid value for \"since\": failed to parse value as time or duration: %q", s)
}

func (a *App) runServiceLogs(ctx context.Context, ref string, o logsOptions) error {
	tail, err := parseTail(o.tail)
	if err != nil {
		return err
	}
	since, err := parseSince(o.since, a.Now())
	if err != nil {
		return err
	}
	c, err := a.control()
	if err != nil {
		return err
	}
	// Slot numbers are padded to the width of the largest, as docker does,
	// so the "|" column lines up.
	width := 1
	if s, err := a.getService(ctx, ref); err == nil {
		if tty := s.GetSpec().GetTask().GetContainer().GetTty(); tty && !o.raw {
			return errors.New("tty service logs only supported with --raw")
		}
		if r := s.GetSpec().GetReplicated(); r != nil {
			width = len(strconv.FormatUint(r.GetReplicas(), 10))
		}
	} else if isConnectError(err) {
		return err
	}
	req := &controlv1.ServiceLogsRequest{Ref: ref, Follow: o.follow, Tail: tail, Timestamps: o.timestamps}
	if !since.IsZero() {
		req.SinceUnixNano = since.UnixNano()
	}
	stream, err := c.ServiceLogs(ctx, req)
	if err != nil {
		return notFoundAs(err, "task or service", ref)
	}
	var nodes map[string]string
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted while following
			}
			return notFoundAs(err, "task or service", ref)
		}
		w := a.Stdout
		if msg.GetStream() == "stderr" {
			w = a.Stderr
		}
		line := msg.GetLine()
		if len(line) == 0 || line[len(line)-1] != '\n' {
			line = append(line, '\n')
		}
		if o.raw {
			_, _ = w.Write(line)
			continue
		}
		if nodes == nil && !o.noResolve {
			if nodes, err = a.nodeNames(ctx); err != nil {
				return err
			}
		}
		var b strings.Builder
		if o.timestamps && msg.GetTimeUnixNano() != 0 {
			b.WriteString(time.Unix(0, msg.GetTimeUnixNano()).UTC().Format(rfc3339NanoFixed))
			b.WriteByte(' ')
		}
		b.WriteString(a.logContext(msg, nodes, width, o))
		b.WriteString("    | ")
		b.Write(line)
		_, _ = io.WriteString(w, b.String())
	}
}

// logContext is the "web.1.abcdef012345@node1" prefix of a log line.
func (a *App) logContext(msg *controlv1.LogMessage, nodes map[string]string, width int, o logsOptions) string {
	name := msg.GetTaskName()
	if name == "" {
		name = msg.GetTaskId()
	}
	slot := name[strings.LastIndexByte(name, '.')+1:]
	if !o.noTaskIDs && msg.GetTaskId() != "" {
		if o.noTrunc {
			name += "." + msg.GetTaskId()
		} else {
			name += "." + truncateID(msg.GetTaskId())
		}
	}
	node := nodes[msg.GetNodeId()]
	if node == "" {
		node = msg.GetNodeId()
	}
	pad := ""
	if _, err := strconv.Atoi(slot); err == nil && width > len(slot) {
		pad = strings.Repeat(" ", width-len(slot))
	}
	return name + "@" + node + pad
}
