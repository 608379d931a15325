package store

import (
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Nodes are named by their annotations or else their hostname; two hosts
// may share a hostname, so names are not unique (as in Docker).
var nodeSchema = &schema[*typesv1.Node]{
	kind:        "node",
	uniqueNames: false,
	name:        nodeName,
	stack:       func(*typesv1.Node) string { return "" },
	setMeta:     func(o *typesv1.Node, m *typesv1.Meta) { o.Meta = m },
	stub:        func(id string, m *typesv1.Meta) *typesv1.Node { return &typesv1.Node{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, o *typesv1.Node) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Node{Node: o}}
	},
}

// GetNode returns a copy of the node with that id, or nil.
func GetNode(tx ReadTx, id string) *typesv1.Node { return get(tx.state().nodes, id) }

// FindNodes returns copies of the nodes that by selects, ordered by id.
func FindNodes(tx ReadTx, by By) ([]*typesv1.Node, error) { return find(tx.state().nodes, by) }

// CreateNode adds the creation of o, stamped with the batch's time.
func (b *Batch) CreateNode(o *typesv1.Node) { addCreate(b, nodeSchema, o) }

// UpdateNode adds an update of o; o.meta.version must be the version read.
func (b *Batch) UpdateNode(o *typesv1.Node) { addUpdate(b, nodeSchema, o) }

// DeleteNode adds the removal of o; o.meta.version must be the version read.
func (b *Batch) DeleteNode(o *typesv1.Node) { addRemove(b, nodeSchema, o) }

func nodeName(n *typesv1.Node) string {
	if name := n.GetSpec().GetAnnotations().GetName(); name != "" {
		return name
	}
	return n.GetDescription().GetHostname()
}
