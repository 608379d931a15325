package pid1

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// lookupUser resolves "uid[:gid]" or "name[:group]" against the container's
// /etc/passwd and /etc/group (the init has already pivoted into the rootfs),
// with the supplementary groups the user is listed in, as Docker does.
func lookupUser(user string) (*syscall.Credential, string, error) {
	if user == "" {
		user = "0"
	}
	name, group, _ := strings.Cut(user, ":")
	passwd := readColonFile("/etc/passwd")
	groups := readColonFile("/etc/group")

	uid, gid := -1, -1
	home := "/"
	userName := ""
	for _, f := range passwd {
		if len(f) < 6 {
			continue
		}
		if f[0] == name || f[2] == name {
			uid, _ = strconv.Atoi(f[2])
			gid, _ = strconv.Atoi(f[3])
			home, userName = f[5], f[0]
			break
		}
	}
	if uid < 0 {
		n, err := strconv.Atoi(name)
		if err != nil || n < 0 {
			return nil, "", fmt.Errorf("unable to find user %s: no matching entries in passwd file", name)
		}
		uid, gid = n, 0
	}
	if group != "" {
		g := -1
		for _, f := range groups {
			if len(f) >= 3 && (f[0] == group || f[2] == group) {
				g, _ = strconv.Atoi(f[2])
				break
			}
		}
		if g < 0 {
			n, err := strconv.Atoi(group)
			if err != nil || n < 0 {
				return nil, "", fmt.Errorf("unable to find group %s: no matching entries in group file", group)
			}
			g = n
		}
		gid = g
	}
	var sup []uint32
	if userName != "" {
		for _, f := range groups {
			if len(f) < 4 {
				continue
			}
			for _, m := range strings.Split(f[3], ",") {
				if m == userName {
					if n, err := strconv.Atoi(f[2]); err == nil && n != gid {
						sup = append(sup, uint32(n))
					}
				}
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: sup}, home, nil
}

func readColonFile(path string) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
