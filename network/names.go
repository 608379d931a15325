package network

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// ifNameMax is the longest interface name the kernel takes (IFNAMSIZ
// less the terminating NUL).
const ifNameMax = 15

// maxPrefixLen leaves room in a bridge name for "-br-" and four
// characters of the network id, the least that still tells networks apart
// at a glance.
const maxPrefixLen = ifNameMax - len("-br-") - 4

// aliasTag starts the alias (IFLA_IFALIAS) of every link the manager
// makes. The alias is where a link's owner is written down: it survives an
// agent restart with the link, so Restore needs no state file of its own.
const aliasTag = "shoal"

// validPrefix reports whether p can start link names: lower-case letters
// and digits only, so that "<prefix>-" never matches another prefix's
// links, and short enough for the names built on it.
func validPrefix(p string) bool {
	if p == "" || len(p) > maxPrefixLen {
		return false
	}
	return isLowerAlnum(p)
}

func isLowerAlnum(s string) bool {
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// validTaskID reports whether id can name a file under the netns
// directory and an alias field.
func validTaskID(id string) bool {
	if id == "" || id[0] == '.' || len(id) > 128 {
		return false
	}
	for _, c := range id {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

// bridgeName names the bridge of network netID. The first try (salt 0) is
// the readable `<prefix>-br-<first 8 of the id>` of DESIGN.md, shortened
// to fit a long prefix; later tries, for when that name is taken by
// another network, use a hash of the id instead.
func bridgeName(prefix, netID string, salt int) string {
	n := min(8, ifNameMax-len(prefix)-len("-br-"))
	if salt == 0 && isLowerAlnum(netID) && netID != "" {
		return prefix + "-br-" + netID[:min(n, len(netID))]
	}
	return prefix + "-br-" + hashHex(netID+"#"+strconv.Itoa(salt), n)
}

// vethName names the host end of task taskID's veth for its index-th
// attachment. Task ids are too long for interface names, so a hash stands
// in; salt moves to another name when a hash happens to be taken.
func vethName(prefix, taskID string, index, salt int) string {
	return prefix + "-" + hashHex(fmt.Sprintf("%s/%d/%d", taskID, index, salt), ifNameMax-len(prefix)-1)
}

// vxlanName names the VXLAN port of the bridge named br: the same name
// with "-vx-" for "-br-", so that the pair is plain to see in `ip link`
// and the name is free whenever the bridge's was.
func vxlanName(prefix, br string) string {
	return prefix + "-vx-" + strings.TrimPrefix(br, bridgePrefix(prefix))
}

// bridgePrefix is how every bridge of a manager's prefix starts; the
// isolation rule matches it as a wildcard.
func bridgePrefix(prefix string) string { return prefix + "-br-" }

func hashHex(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

// owner is what a link's alias says about it.
type owner struct {
	netID  string // every kind
	vni    uint32 // bridges of overlay networks only
	taskID string // veths only
	ifName string // veths only: the name of the other end in the task
	index  int    // veths only: the attachment's position
}

func (o owner) isVeth() bool { return o.taskID != "" }

// bridgeAlias and vethAlias write an owner as `shoal key=value…`. A
// VXLAN device has its bridge's alias without the VNI, which it carries
// itself.
func bridgeAlias(netID string) string { return aliasTag + " net=" + netID }

// overlayBridgeAlias is the alias of an overlay network's bridge: the
// VNI in it tells Restore that the bridge needs a VXLAN port, also when a
// crash came before the port was made.
func overlayBridgeAlias(netID string, vni uint32) string {
	return bridgeAlias(netID) + " vni=" + strconv.FormatUint(uint64(vni), 10)
}

func vethAlias(taskID, netID string, index int) string {
	return fmt.Sprintf("%s task=%s net=%s if=%s idx=%d", aliasTag, taskID, netID, ifName(index), index)
}

// ifName is the name of a task's index-th interface, as Docker names them.
func ifName(index int) string { return "eth" + strconv.Itoa(index) }

// parseAlias reads an alias written by bridgeAlias, overlayBridgeAlias or
// vethAlias; ok is false for anything else, which the manager then does
// not adopt.
func parseAlias(alias string) (o owner, ok bool) {
	f := strings.Fields(alias)
	if len(f) < 2 || f[0] != aliasTag {
		return owner{}, false
	}
	kv := map[string]string{}
	for _, s := range f[1:] {
		k, v, found := strings.Cut(s, "=")
		if !found || v == "" {
			return owner{}, false
		}
		kv[k] = v
	}
	o.netID = kv["net"]
	if o.netID == "" {
		return owner{}, false
	}
	if v, ok := kv["vni"]; ok {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || !validVNI(uint32(n)) {
			return owner{}, false
		}
		o.vni = uint32(n)
	}
	if t, isVeth := kv["task"]; isVeth {
		idx, err := strconv.Atoi(kv["idx"])
		if err != nil || idx < 0 || kv["if"] == "" {
			return owner{}, false
		}
		o.taskID, o.ifName, o.index = t, kv["if"], idx
	}
	return o, true
}

// looksMade reports whether a link without an owner in its alias has a
// name the manager would have given it: such a link is what a crash
// between creating a link and writing its alias leaves. Other links of the
// prefix are left alone.
func looksMade(prefix, name, typ string) bool {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return false
	}
	switch typ {
	case "bridge":
		return strings.HasPrefix(rest, "br-")
	case "veth":
		return len(name) == ifNameMax && isHex(rest)
	}
	return false
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
