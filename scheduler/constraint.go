package scheduler

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// ErrInvalidConstraint classifies every error of ParseConstraints; the
// message that wraps it names the expression and what is wrong with it.
var ErrInvalidConstraint = errors.New("invalid constraint")

// Operator is how a constraint compares a node attribute with its value.
type Operator int

const (
	// OpEqual is "==".
	OpEqual Operator = iota
	// OpNotEqual is "!=".
	OpNotEqual
)

// String returns the operator as written in a constraint.
func (o Operator) String() string {
	if o == OpNotEqual {
		return "!="
	}
	return "=="
}

// attribute is the node attribute a constraint looks at.
type attribute int

const (
	attrID attribute = iota
	attrHostname
	attrIP
	attrRole
	attrOS
	attrArch
	attrLabel
)

const (
	nodeLabelPrefix   = "node.labels."
	engineLabelPrefix = "engine.labels."
)

var (
	// keyPattern and valuePattern are swarmkit's, so that a constraint
	// Docker accepts is accepted here and one it refuses is refused. The
	// value may not contain operator characters ('=', '!', '<', '>', '~')
	// so that new operators can be added later without changing meaning.
	keyPattern   = regexp.MustCompile(`^(?i)[a-z_][a-z0-9\-_.]+$`)
	valuePattern = regexp.MustCompile(`^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$`)
)

// Constraint is one parsed placement constraint, such as
// "node.labels.zone==eu-1". Build it with ParseConstraints.
type Constraint struct {
	// Key is the attribute as written, e.g. "node.labels.zone".
	Key string
	// Operator is == or !=.
	Operator Operator
	// Value is what the attribute is compared with, case-insensitively.
	Value string

	attr  attribute
	label string // for node.labels.X / engine.labels.X: X, case kept

	// For node.ip: exactly one of addr and prefix is valid.
	addr   netip.Addr
	prefix netip.Prefix
}

// String returns the constraint as it would be written.
func (c Constraint) String() string {
	return c.Key + c.Operator.String() + c.Value
}

// ParseConstraints parses placement constraints as Docker writes them
// ("KEY==VALUE" or "KEY!=VALUE"). Keys are node.id, node.hostname, node.ip,
// node.role, node.platform.os, node.platform.arch, node.labels.KEY and
// engine.labels.KEY. Unlike Docker, an unknown key or a role other than
// manager/worker is an error here rather than a constraint no node can
// ever satisfy: the user learns at deploy time, not from a task that stays
// pending forever.
func ParseConstraints(exprs []string) ([]Constraint, error) {
	if len(exprs) == 0 {
		return nil, nil
	}
	out := make([]Constraint, 0, len(exprs))
	for _, e := range exprs {
		c, err := ParseConstraint(e)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// ParseConstraint parses one constraint; see ParseConstraints.
func ParseConstraint(expr string) (Constraint, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidConstraint, expr, fmt.Sprintf(format, args...))
	}

	// "==" is looked for first, as swarmkit does, so "a==b!=c" is key "a"
	// with a value that the value pattern then refuses.
	var c Constraint
	var key, value string
	if k, v, ok := strings.Cut(expr, "=="); ok {
		key, value, c.Operator = k, v, OpEqual
	} else if k, v, ok := strings.Cut(expr, "!="); ok {
		key, value, c.Operator = k, v, OpNotEqual
	} else {
		return Constraint{}, invalid("expected == or !=")
	}
	key, value = strings.TrimSpace(key), strings.TrimSpace(value)
	if !keyPattern.MatchString(key) {
		return Constraint{}, invalid("invalid key %q", key)
	}
	if !valuePattern.MatchString(value) {
		return Constraint{}, invalid("invalid value %q", value)
	}
	c.Key, c.Value = key, value

	// Docker matches the fixed part of a key case-insensitively; the label
	// name itself keeps its case because labels are case-sensitive.
	lower := strings.ToLower(key)
	switch {
	case lower == "node.id":
		c.attr = attrID
	case lower == "node.hostname":
		c.attr = attrHostname
	case lower == "node.role":
		c.attr = attrRole
		if !strings.EqualFold(value, "manager") && !strings.EqualFold(value, "worker") {
			return Constraint{}, invalid("node.role is manager or worker, not %q", value)
		}
	case lower == "node.platform.os":
		c.attr = attrOS
	case lower == "node.platform.arch":
		c.attr = attrArch
	case lower == "node.ip":
		c.attr = attrIP
		if a, err := netip.ParseAddr(value); err == nil {
			c.addr = a.Unmap()
		} else if p, err := netip.ParsePrefix(value); err == nil {
			c.prefix = p.Masked()
		} else {
			return Constraint{}, invalid("node.ip is an IP address or a CIDR subnet, not %q", value)
		}
	case len(lower) > len(nodeLabelPrefix) && strings.HasPrefix(lower, nodeLabelPrefix):
		c.attr, c.label = attrLabel, key[len(nodeLabelPrefix):]
	case len(lower) > len(engineLabelPrefix) && strings.HasPrefix(lower, engineLabelPrefix):
		// shoal has no engine separate from the node, so engine labels are
		// the node's labels; stacks written for Docker keep working.
		c.attr, c.label = attrLabel, key[len(engineLabelPrefix):]
	default:
		return Constraint{}, invalid("unknown key %q (want node.id, node.hostname, node.ip, node.role, node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>)", key)
	}
	return c, nil
}

// Matches reports whether node n satisfies the constraint. A missing
// attribute (a label the node does not have, a node without a hostname)
// compares as the empty string, so "node.labels.x!=v" matches nodes
// without the label, as in Docker.
func (c Constraint) Matches(n *typesv1.Node) bool {
	var have string
	switch c.attr {
	case attrID:
		have = n.GetId()
	case attrHostname:
		have = n.GetDescription().GetHostname()
	case attrRole:
		have = roleName(n.GetRole())
	case attrOS:
		have = n.GetDescription().GetOs()
	case attrArch:
		have = n.GetDescription().GetArchitecture()
	case attrLabel:
		have = n.GetSpec().GetAnnotations().GetLabels()[c.label]
	case attrIP:
		return c.matchIP(n) == (c.Operator == OpEqual)
	}
	return strings.EqualFold(have, c.Value) == (c.Operator == OpEqual)
}

// matchIP reports whether the node's address equals c.addr or lies in
// c.prefix. A node whose address does not parse matches nothing, so "=="
// fails and "!=" passes, as in swarmkit.
func (c Constraint) matchIP(n *typesv1.Node) bool {
	s := n.GetStatus().GetAddr()
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return false
		}
		a = ap.Addr()
	}
	a = a.Unmap()
	if c.addr.IsValid() {
		return a == c.addr
	}
	return c.prefix.Contains(a)
}

// NodeMatches reports whether n satisfies every constraint. The deploy
// package uses it to decide which nodes a global service runs on.
func NodeMatches(constraints []Constraint, n *typesv1.Node) bool {
	for _, c := range constraints {
		if !c.Matches(n) {
			return false
		}
	}
	return true
}

// roleName is the role as users write it in constraints.
func roleName(r typesv1.NodeRole) string {
	if r == typesv1.NodeRole_NODE_ROLE_MANAGER {
		return "manager"
	}
	return "worker"
}
