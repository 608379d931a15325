// Command testhelper is the one program in shoal's test images, installed
// as /bin/helper with busybox-style symlinks, so that runtime and e2e tests
// need no image registry. Each subcommand shows one thing a test wants to
// observe from inside a container (identity, processes, signals, limits,
// mounts, network); its output is meant to be parsed, so it is terse and
// stable.
//
// Usage: helper CMD ARGS…, or CMD ARGS… through a symlink named CMD.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type command struct {
	args string // usage of the arguments
	run  func(args []string) int
}

// commands is filled in init because some commands (sh) dispatch to it.
var commands map[string]command

func init() {
	commands = map[string]command{
		"echo":     {"ARGS…", cmdEcho},
		"env":      {"", cmdEnv},
		"pwd":      {"", cmdPwd},
		"id":       {"", cmdID},
		"hostname": {"", cmdHostname},
		"cat":      {"FILE…", cmdCat},
		"ls":       {"DIR", cmdLs},
		"write":    {"FILE CONTENT", cmdWrite},
		"stat":     {"FILE (prints: octal-perm uid gid size)", cmdStat},
		"exit":     {"N", cmdExit},
		"true":     {"", func([]string) int { return 0 }},
		"false":    {"", func([]string) int { return 1 }},
		"sleep":    {"SECONDS|inf", cmdSleep},
		"ps":       {"(prints: PID PPID STATE COMMAND ARGS)", cmdPs},
		"zombie":   {"[SECONDS] (prints: orphan PID)", cmdZombie},
		"_orphan":  {"SECONDS", cmdOrphan},
		"alloc":    {"MB", cmdAlloc},
		"trap":     {"[ignore]", cmdTrap},
		"serve":    {"PORT (prints: listening ADDR)", cmdServe},
		"lookup":   {"NAME (prints its addresses, sorted, one a line)", cmdLookup},
		"fetch":    {"URL N (N requests, a new connection each; prints each body)", cmdFetch},
		"spin":     {"[THREADS]", cmdSpin},
		"log":      {"N SIZE", cmdLog},
		"stderr":   {"TEXT…", cmdStderr},
		"caps":     {"", cmdCaps},
		"mounts":   {"", cmdMounts},
		"tryopen":  {"PATH", cmdTryopen},
		"fork":     {"N [SECONDS] (prints: started K)", cmdFork},
		"sh":       {"-c 'CMD ARGS…' (no quoting, pipes or variables)", cmdSh},
		"rm":       {"PATH", cmdRm},
		"mknod":    {"PATH MAJOR MINOR (a block device node)", cmdMknod},
		"tty":      {"(prints the terminal on stdin, or 'not a tty')", cmdTty},
		// For testutil, which builds images with one symlink per name.
		"_commands": {"", func([]string) int {
			fmt.Println(strings.Join(names(), "\n"))
			return 0
		}},
	}
}

// names lists the subcommands that get a symlink in test images.
func names() []string {
	var names []string
	for name := range commands {
		if !strings.HasPrefix(name, "_") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func main() {
	os.Exit(run(os.Args))
}

func run(argv []string) int {
	if len(argv) > 0 {
		if c, ok := commands[filepath.Base(argv[0])]; ok {
			return c.run(argv[1:])
		}
	}
	if len(argv) > 1 {
		if c, ok := commands[argv[1]]; ok {
			return c.run(argv[2:])
		}
	}
	return usage()
}

func usage() int {
	fmt.Fprintln(os.Stderr, "usage: helper CMD ARGS…, or CMD ARGS… through a symlink named CMD")
	for _, name := range names() {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", name, commands[name].args)
	}
	return 2
}

// fail reports an error the way a test can match it: on stderr, exit 1.
func fail(err error) int {
	fmt.Fprintln(os.Stderr, "helper:", err)
	return 1
}

// wantArgs checks that there are lo to hi (-1: any) arguments; a wrong
// count is a usage error.
func wantArgs(args []string, lo, hi int) bool {
	if len(args) < lo || (hi >= 0 && len(args) > hi) {
		usage()
		return false
	}
	return true
}

func cmdEcho(args []string) int {
	fmt.Println(strings.Join(args, " "))
	return 0
}

func cmdEnv([]string) int {
	env := os.Environ()
	slices.Sort(env)
	for _, kv := range env {
		fmt.Println(kv)
	}
	return 0
}

func cmdPwd([]string) int {
	wd, err := os.Getwd()
	if err != nil {
		return fail(err)
	}
	fmt.Println(wd)
	return 0
}

func cmdID([]string) int {
	groups, err := os.Getgroups()
	if err != nil {
		return fail(err)
	}
	slices.Sort(groups)
	gs := make([]string, len(groups))
	for i, g := range groups {
		gs[i] = strconv.Itoa(g)
	}
	fmt.Printf("uid=%d gid=%d groups=%s\n", os.Getuid(), os.Getgid(), strings.Join(gs, ","))
	return 0
}

func cmdHostname([]string) int {
	h, err := os.Hostname()
	if err != nil {
		return fail(err)
	}
	fmt.Println(h)
	return 0
}

func cmdCat(args []string) int {
	if !wantArgs(args, 1, -1) {
		return 2
	}
	for _, name := range args {
		b, err := os.ReadFile(name)
		if err != nil {
			return fail(err)
		}
		os.Stdout.Write(b)
	}
	return 0
}

func cmdLs(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	des, err := os.ReadDir(args[0]) // sorted by name
	if err != nil {
		return fail(err)
	}
	for _, de := range des {
		fmt.Println(de.Name())
	}
	return 0
}

func cmdWrite(args []string) int {
	if !wantArgs(args, 2, 2) {
		return 2
	}
	if err := os.MkdirAll(filepath.Dir(args[0]), 0o755); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
		return fail(err)
	}
	return 0
}

func cmdStat(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	var st syscall.Stat_t
	if err := syscall.Stat(args[0], &st); err != nil {
		return fail(&os.PathError{Op: "stat", Path: args[0], Err: err})
	}
	// Octal permission bits with setuid/setgid/sticky, as chmod takes them.
	fmt.Printf("%04o %d %d %d\n", st.Mode&0o7777, st.Uid, st.Gid, st.Size)
	return 0
}

func cmdExit(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return usage()
	}
	return n
}

func cmdSleep(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	if args[0] == "inf" || args[0] == "infinity" {
		sleepForever()
	}
	s, err := strconv.ParseFloat(args[0], 64)
	if err != nil || s < 0 {
		return usage()
	}
	time.Sleep(time.Duration(s * float64(time.Second)))
	return 0
}

// sleepForever blocks without a deadlock panic: a pending timer keeps the
// runtime from deciding that all goroutines are asleep.
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

func cmdPs([]string) int {
	des, err := os.ReadDir("/proc")
	if err != nil {
		return fail(err)
	}
	var pids []int
	for _, de := range des {
		if pid, err := strconv.Atoi(de.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid …"; comm may hold spaces and parentheses.
		s := string(stat)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		comm := s[lp+1 : rp]
		f := strings.Fields(s[rp+1:])
		if len(f) < 2 {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Join(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00"), " ")
		fmt.Println(strings.TrimRight(fmt.Sprintf("%d %s %s %s %s", pid, f[1], f[0], comm, args), " "))
	}
	return 0
}

// self is this program, for re-executing it as a child.
func self() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

// startSelf runs helper ARGS with the given stdout. os.StartProcess and not
// os/exec, because exec opens /dev/null for unset stdio and a test image
// need not have one.
func startSelf(stdout *os.File, args ...string) (*os.Process, error) {
	return os.StartProcess(self(), append([]string{"helper"}, args...), &os.ProcAttr{
		Files: []*os.File{os.Stdin, stdout, os.Stderr},
	})
}

// cmdZombie leaves an orphan for PID 1 to reap: a child starts a short-lived
// grandchild and exits without waiting, so the grandchild is reparented to
// PID 1 (or the nearest subreaper) and becomes a zombie there when it exits.
func cmdZombie(args []string) int {
	if !wantArgs(args, 0, 1) {
		return 2
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	child, err := startSelf(pw, "_orphan", "0.2")
	pw.Close()
	if err != nil {
		pr.Close()
		return fail(err)
	}
	line, err := bufio.NewReader(pr).ReadString('\n')
	pr.Close()
	if _, werr := child.Wait(); err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return fail(fmt.Errorf("orphan: %w", err))
	}
	fmt.Print("orphan ", line)
	if len(args) == 0 {
		sleepForever()
	}
	return cmdSleep(args)
}

func cmdOrphan(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	// The grandchild must not hold the pipe to the zombie command, or its
	// read would wait for the grandchild to exit.
	p, err := startSelf(os.Stderr, "sleep", args[0])
	if err != nil {
		return fail(err)
	}
	fmt.Println(p.Pid)
	return 0
}

// sink keeps alloc's memory reachable for as long as the process lives.
var sink []byte

func cmdAlloc(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	mb, err := strconv.Atoi(args[0])
	if err != nil || mb < 0 {
		return usage()
	}
	sink = make([]byte, mb<<20)
	// Touch every page so that the memory is charged to the cgroup, not
	// just reserved.
	page := os.Getpagesize()
	for i := 0; i < len(sink); i += page {
		sink[i] = 1
	}
	fmt.Println("allocated")
	sleepForever()
	return 0
}

var signalNames = map[os.Signal]string{
	syscall.SIGTERM: "SIGTERM",
	syscall.SIGINT:  "SIGINT",
	syscall.SIGHUP:  "SIGHUP",
	syscall.SIGUSR1: "SIGUSR1",
}

func cmdTrap(args []string) int {
	if !wantArgs(args, 0, 1) {
		return 2
	}
	if len(args) == 1 && args[0] != "ignore" {
		return usage()
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1)
	// Only now may a test send a signal and expect it to be caught.
	fmt.Println("ready")
	for sig := range ch {
		fmt.Println("got", signalNames[sig])
		if len(args) == 0 {
			return 0
		}
	}
	return 0
}

func cmdServe(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", args[0]))
	if err != nil {
		return fail(err)
	}
	host, _ := os.Hostname()
	exit := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hostname=%s remote=%s\n", host, r.RemoteAddr)
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "bye")
		select {
		case <-exit:
		default:
			close(exit)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	// Port 0 picks a free port; the address tells the test which one.
	fmt.Println("listening", ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// SIGTERM finishes the requests in progress, as a well-behaved
	// server does, so that a test can tell a dropped request from one
	// the server was killed in the middle of.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case err := <-errc:
		return fail(err)
	case <-exit:
	case <-term:
	}
	// Shutdown lets the /exit response reach the client first.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fail(err)
	}
	return 0
}

func cmdSpin(args []string) int {
	if !wantArgs(args, 0, 1) {
		return 2
	}
	n := 1
	if len(args) == 1 {
		var err error
		if n, err = strconv.Atoi(args[0]); err != nil || n < 1 {
			return usage()
		}
	}
	for range n - 1 {
		go spin()
	}
	spin()
	return 0
}

func spin() {
	for {
	}
}

// cmdLog writes N lines of SIZE bytes each (newline not counted), each
// starting with its number so that a test can check order and loss.
func cmdLog(args []string) int {
	if !wantArgs(args, 2, 2) {
		return 2
	}
	n, err1 := strconv.Atoi(args[0])
	size, err2 := strconv.Atoi(args[1])
	if err1 != nil || err2 != nil || n < 0 || size < 0 {
		return usage()
	}
	w := bufio.NewWriter(os.Stdout)
	line := make([]byte, 0, size+1)
	for i := range n {
		line = strconv.AppendInt(line[:0], int64(i), 10)
		line = append(line, ' ')
		for len(line) < size {
			line = append(line, 'x')
		}
		line = append(line[:size], '\n')
		if _, err := w.Write(line); err != nil {
			return fail(err)
		}
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	return 0
}

func cmdStderr(args []string) int {
	fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	return 0
}

func cmdCaps([]string) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fail(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, key := range []string{"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:"} {
			if strings.HasPrefix(line, key) {
				fmt.Println(line)
			}
		}
	}
	return 0
}

func cmdMounts([]string) int {
	return cmdCat([]string{"/proc/self/mountinfo"})
}

// cmdTryopen prints the error on stdout, unlike other commands, because
// the error is the expected result of a test that checks a denial.
func cmdTryopen(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	f, err := os.Open(args[0])
	if err != nil {
		fmt.Println(err)
		return 1
	}
	f.Close()
	fmt.Println("ok")
	return 0
}

// cmdFork starts up to N sleeping children and prints how many started,
// then waits for them. Each child is this Go program, whose threads also
// count against a pids limit.
func cmdFork(args []string) int {
	if !wantArgs(args, 1, 2) {
		return 2
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 {
		return usage()
	}
	secs := "inf"
	if len(args) == 2 {
		secs = args[1]
	}
	var children []*os.Process
	for range n {
		p, err := os.StartProcess(self(), []string{"helper", "sleep", secs}, &os.ProcAttr{
			Files: []*os.File{os.Stdin, os.Stderr, os.Stderr},
			// Children do not outlive the helper, even when it is killed.
			Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper: fork:", err)
			break
		}
		children = append(children, p)
	}
	fmt.Println("started", len(children))
	for _, p := range children {
		p.Wait()
	}
	return 0
}

// cmdSh stands in for /bin/sh -c, which compose healthchecks (CMD-SHELL)
// and string commands use; it splits on blanks and runs one subcommand.
func cmdSh(args []string) int {
	if len(args) != 2 || args[0] != "-c" {
		return usage()
	}
	f := strings.Fields(args[1])
	if len(f) == 0 {
		return 0
	}
	return run(append([]string{"helper"}, f...))
}

func cmdRm(args []string) int {
	if len(args) != 1 {
		return usage()
	}
	if err := os.RemoveAll(args[0]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func cmdMknod(args []string) int {
	if len(args) != 3 {
		return usage()
	}
	major, err1 := strconv.Atoi(args[1])
	minor, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		return usage()
	}
	if err := syscall.Mknod(args[0], syscall.S_IFBLK|0o600, major<<8|minor); err != nil {
		fmt.Println(err)
		return 1
	}
	return 0
}

func cmdTty(args []string) int {
	l, err := os.Readlink("/proc/self/fd/0")
	if err != nil || !strings.HasPrefix(l, "/dev/pts/") {
		fmt.Println("not a tty")
		return 1
	}
	fmt.Println(l)
	return 0
}

func cmdLookup(args []string) int {
	if !wantArgs(args, 1, 1) {
		return 2
	}
	addrs, err := net.LookupHost(args[0])
	if err != nil {
		return fail(err)
	}
	slices.Sort(addrs)
	for _, a := range addrs {
		fmt.Println(a)
	}
	return 0
}

func cmdFetch(args []string) int {
	if !wantArgs(args, 2, 2) {
		return 2
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return fail(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range n {
		resp, err := client.Get(args[0])
		if err != nil {
			return fail(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fail(err)
		}
		fmt.Print(string(body))
	}
	return 0
}
