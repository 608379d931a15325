package scheduler

import (
	"errors"
	"fmt"
	"strings"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// ErrInvalidPreference classifies every error of ParsePreferences.
var ErrInvalidPreference = errors.New("invalid placement preference")

// Preference is a parsed placement preference "spread=node.labels.KEY":
// spread a service's tasks evenly over the groups of nodes that share a
// value of the label. Nodes without the label form one group of their own,
// as in Docker.
type Preference struct {
	// Descriptor is the label as written, e.g. "node.labels.zone".
	Descriptor string
	// Label is the label's name, e.g. "zone".
	Label string
}

// ParsePreferences parses placement preferences as Docker writes them on
// the command line ("spread=node.labels.zone"); the stack package writes
// compose's `- spread: node.labels.zone` the same way. engine.labels.KEY is
// accepted and means the node label, as in constraints.
func ParsePreferences(prefs []string) ([]Preference, error) {
	if len(prefs) == 0 {
		return nil, nil
	}
	out := make([]Preference, 0, len(prefs))
	for _, p := range prefs {
		strategy, desc, ok := strings.Cut(p, "=")
		strategy, desc = strings.TrimSpace(strategy), strings.TrimSpace(desc)
		if !ok || !strings.EqualFold(strategy, "spread") {
			return nil, fmt.Errorf("%w %q: expected spread=node.labels.<name>", ErrInvalidPreference, p)
		}
		lower := strings.ToLower(desc)
		var label string
		switch {
		case len(lower) > len(nodeLabelPrefix) && strings.HasPrefix(lower, nodeLabelPrefix):
			label = desc[len(nodeLabelPrefix):]
		case len(lower) > len(engineLabelPrefix) && strings.HasPrefix(lower, engineLabelPrefix):
			label = desc[len(engineLabelPrefix):]
		default:
			return nil, fmt.Errorf("%w %q: spread takes node.labels.<name>, not %q", ErrInvalidPreference, p, desc)
		}
		out = append(out, Preference{Descriptor: desc, Label: label})
	}
	return out, nil
}

// value is the node's value for the preference's label; "" for a node
// without it, which puts all such nodes in one group.
func (p Preference) value(n *typesv1.Node) string {
	return n.GetSpec().GetAnnotations().GetLabels()[p.Label]
}
