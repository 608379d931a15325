package nodeapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodev1 "github.com/shoal-dev/shoal/proto/node/v1"
	"github.com/shoal-dev/shoal/runtime"
)

// TopContainer implements nodev1.NodeServer the way Docker's daemon does:
// it runs ps(1) on the node with the client's options (default -ef) and
// keeps the lines of the container's processes, so that every ps option
// a Docker user knows works. The container's processes are those of its
// cgroup, with host pids, as ps shows them.
//
// A node without ps still answers a plain `top` from /proc (UID, PID,
// PPID, CMD); options need ps.
func (s *Server) TopContainer(ctx context.Context, req *nodev1.TopContainerRequest) (*nodev1.TopContainerResponse, error) {
	procs, err := s.rt.Top(req.GetRef())
	if err != nil {
		return nil, containerError(err, req.GetRef())
	}
	args := req.GetPsArgs()
	if len(args) == 0 {
		args = []string{"-ef"}
	}
	if err := validatePSArgs(strings.Join(args, " ")); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ps := s.ps
	if ps == "" {
		if ps, err = exec.LookPath("ps"); err != nil {
			if len(req.GetPsArgs()) == 0 {
				return procTable(procs), nil
			}
			return nil, status.Error(codes.FailedPrecondition, "ps is not installed on this node: top with ps options needs it")
		}
	}
	pids := make([]int, len(procs))
	for i, p := range procs {
		pids[i] = p.Pid
	}
	out, err := runPS(ctx, ps, args, pids)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	titles, rows, err := parsePSOutput(out, pids)
	if err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	resp := &nodev1.TopContainerResponse{Titles: titles}
	for _, r := range rows {
		resp.Processes = append(resp.Processes, &nodev1.Process{Fields: r})
	}
	return resp, nil
}

// runPS runs ps with the container's pids (-q, so that ps need not list
// the whole host) and, as Docker does, once more without them when ps
// refuses the combination (some options, such as f, cannot go with -q).
func runPS(ctx context.Context, ps string, args []string, pids []int) ([]byte, error) {
	q := make([]string, len(pids))
	for i, p := range pids {
		q[i] = strconv.Itoa(p)
	}
	out, err := exec.CommandContext(ctx, ps, append(slices.Clone(args), "-q"+strings.Join(q, ","))...).Output()
	if err == nil {
		return out, nil
	}
	out, err = exec.CommandContext(ctx, ps, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if line, _, _ := bytes.Cut(ee.Stderr, []byte("\n")); len(line) > 0 {
				err = errors.New(string(line))
			}
		}
		return nil, fmt.Errorf("ps: %w", err)
	}
	return out, nil
}

// psRenameRe finds ps options that rename a column to PID ("-o comm=PID"),
// which would make the pid column unfindable; Docker refuses them too.
var psRenameRe = regexp.MustCompile(`\s+(\S*)=\s*(PID\S*)`)

func validatePSArgs(args string) error {
	for _, g := range psRenameRe.FindAllStringSubmatch(args, -1) {
		if len(g) >= 3 && g[1] != "pid" {
			return fmt.Errorf("specifying \"%s=%s\" is not allowed", g[1], g[2])
		}
	}
	return nil
}

// parsePSOutput keeps the lines of ps output whose PID is one of pids,
// and, with thread options (ps m), the thread lines ("-" for PID) under
// them. The last column (the command) may hold spaces, so extra fields
// join into it. This is Docker's parsePSOutput.
func parsePSOutput(out []byte, pids []int) ([]string, [][]string, error) {
	lines := strings.Split(string(out), "\n")
	titles := fieldsASCII(lines[0])
	pidIndex := slices.Index(titles, "PID")
	if pidIndex < 0 {
		return nil, nil, errors.New("couldn't find PID field in ps output")
	}
	var rows [][]string
	inContainer := false
	for _, line := range lines[1:] {
		fields := fieldsASCII(line)
		if len(fields) <= pidIndex {
			continue
		}
		if fields[pidIndex] == "-" {
			if inContainer {
				rows = append(rows, joinOverhang(fields, len(titles)))
			}
			continue
		}
		p, err := strconv.Atoi(fields[pidIndex])
		if err != nil {
			return nil, nil, fmt.Errorf("unexpected pid %q: %v", fields[pidIndex], err)
		}
		inContainer = slices.Contains(pids, p)
		if inContainer {
			rows = append(rows, joinOverhang(fields, len(titles)))
		}
	}
	return titles, rows, nil
}

func joinOverhang(fields []string, n int) []string {
	if len(fields) <= n {
		return fields
	}
	row := slices.Clone(fields[:n-1])
	return append(row, strings.Join(fields[n-1:], " "))
}

// fieldsASCII splits at ASCII whitespace only: a command line may hold
// other Unicode spaces, which are its own.
func fieldsASCII(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
	})
}

// procTable is `top` without ps: what the runtime reads from /proc.
func procTable(procs []runtime.Process) *nodev1.TopContainerResponse {
	resp := &nodev1.TopContainerResponse{Titles: []string{"UID", "PID", "PPID", "CMD"}}
	for _, p := range procs {
		resp.Processes = append(resp.Processes, &nodev1.Process{Fields: []string{
			strconv.Itoa(p.UID), strconv.Itoa(p.Pid), strconv.Itoa(p.PPid), p.Cmd,
		}})
	}
	return resp
}
