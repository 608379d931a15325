package testcluster

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// helperArg, as the first argument of the test binary, makes it a helper
// program instead of running tests: nodes run the test binary itself, so
// the tests need nothing built.
const helperArg = "testcluster-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(helperMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// self is the test binary, for nodes to run as a helper.
func self(t testing.TB) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// helperMain runs one helper command:
//
//	echo ADDR          listen on ADDR, print "listening", echo every connection
//	dial ADDR TIMEOUT  connect to ADDR, send "ping\n", print the line that comes back
//	spawn              start "sleep" in a new session, detached, print its pid, exit
//	sleep              wait for a signal; die of it
//	ignore-term        ignore SIGTERM, print "ready", wait
func helperMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no command")
		return 2
	}
	switch cmd, args := args[0], args[1:]; {
	case cmd == "echo" && len(args) == 1:
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening", ln.Addr())
		for {
			c, err := ln.Accept()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	case cmd == "dial" && len(args) == 2:
		d, err := time.ParseDuration(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		c, err := net.DialTimeout("tcp", args[0], d)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(d))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(line)
		return 0
	case cmd == "spawn" && len(args) == 0:
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		child := exec.Command(exe, helperArg, "sleep")
		child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(child.Process.Pid)
		return 0
	case cmd == "sleep" && len(args) == 0:
		select {}
	case cmd == "ignore-term" && len(args) == 0:
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		select {}
	}
	fmt.Fprintf(os.Stderr, "helper: bad command %q\n", args)
	return 2
}
