package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	// errors adds up socket errors (connect, read, write, timeout) and
	// non-2xx/3xx responses.
	errors int64
}

// runWrk runs wrk against url and parses its report; wrk is the command
// that runs it (wrk's path, maybe after nsenter's).
func runWrk(ctx context.Context, wrk []string, threads, conns int, d time.Duration, closeConns bool, url string) (wrkResult, error) {
	args := []string{
		"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns),
		"-d" + strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s", "--latency",
	}
	if closeConns {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, url)
	out, err := exec.CommandContext(ctx, wrk[0], append(slices.Clone(wrk[1:]), args...)...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("wrk %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return r, nil
}

// parseWrk reads the lines of wrk 4's report that matter here:
//
//	Latency Distribution
//	   50%  401.00us
//	   99%    1.79ms
//	  2117392 requests in 10.00s, 234.27MB read
//	  Socket errors: connect 0, read 12, write 0, timeout 0
//	  Non-2xx or 3xx responses: 3
//	Requests/sec: 211651.15
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, haveP99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, err
			}
			r.rps, haveRPS = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			if f[0] == "50%" {
				r.p50 = d
			} else {
				r.p99, haveP99 = d, true
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, _ = strconv.ParseInt(f[0], 10, 64)
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			// connect 0, read 12, write 0, timeout 0
			for i := 3; i < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i], ","), 10, 64)
				r.errors += n
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			n, _ := strconv.ParseInt(f[4], 10, 64)
			r.errors += n
		}
	}
	if !haveRPS || !haveP99 {
		return r, fmt.Errorf("no Requests/sec or 99%% line in wrk's output")
	}
	return r, nil
}

// parseWrkDuration reads wrk's units: us, ms, s, m.
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: unknown unit", s)
}
