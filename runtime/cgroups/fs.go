package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// writeFile writes one value to a cgroup interface file. Unlike
// os.WriteFile it never creates the file: a missing file means a missing
// controller, and must show as ENOENT.
func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		// cgroupfs takes the value in one write; a second write of the
		// remainder would be a second, truncated value.
		_, err = f.Write([]byte(value))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("write %s %q: %w", path, value, err)
	}
	return nil
}

// apply writes settings into dir. A setting that lifts a limit is skipped
// when its file is missing: no controller, no limit to lift.
func apply(dir string, settings []Setting) error {
	for _, s := range settings {
		err := writeFile(filepath.Join(dir, s.File), s.Value)
		if err != nil && !(s.Unlimited && errors.Is(err, fs.ErrNotExist)) {
			return err
		}
	}
	return nil
}

func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(b)), nil
}

// unlimitedV1 is the smallest value v1 shows for "no limit"
// (PAGE_COUNTER_MAX pages, 0x7ffffffffffff000 with 4 KiB pages); larger page
// sizes give other values above it.
const unlimitedV1 = 1 << 62

// readUint reads a one-number file. "max" (v2) and v1's huge "no limit"
// values read as 0, which is what Resources and Stats use for "no limit".
func readUint(path string) (uint64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	if n >= unlimitedV1 {
		return 0, nil
	}
	return n, nil
}

// readKV reads "key value" lines (cpu.stat, memory.events, oom_control).
func readKV(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue // not every line is a counter (e.g. "max" in some files)
		}
		out[k] = n
	}
	return out, sc.Err()
}

// readPids lists the processes in one cgroup directory.
func readPids(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "cgroup.procs"), err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// subdirs lists dir and every cgroup below it, deepest first, so that they
// can be removed in that order. A container with a writable cgroupfs may
// have made children of its own.
func subdirs(dir string) ([]string, error) {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != dir {
				return nil // removed while we walked
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(dirs)-1; i < j; i, j = i+1, j-1 {
		dirs[i], dirs[j] = dirs[j], dirs[i]
	}
	return dirs, nil
}

// rmdir removes one cgroup directory; gone already is fine. The kernel
// answers EBUSY for a short while after the last process left (the css is
// still going offline), so that is retried briefly.
func rmdir(path string) error {
	delay := 5 * time.Millisecond
	deadline := time.Now().Add(time.Second)
	for {
		err := unix.Rmdir(path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}
