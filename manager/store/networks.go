package store

import (
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Network names are unique (without case), as in swarmkit, since stacks
// and services refer to networks by name.
var networkSchema = &schema[*typesv1.Network]{
	kind:        "network",
	uniqueNames: true,
	name:        func(o *typesv1.Network) string { return o.GetSpec().GetAnnotations().GetName() },
	stack:       func(o *typesv1.Network) string { return label(o.GetSpec().GetAnnotations(), StackLabel) },
	setMeta:     func(o *typesv1.Network, m *typesv1.Meta) { o.Meta = m },
	stub:        func(id string, m *typesv1.Meta) *typesv1.Network { return &typesv1.Network{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, o *typesv1.Network) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Network{Network: o}}
	},
}

// GetNetwork returns a copy of the network with that id, or nil.
func GetNetwork(tx ReadTx, id string) *typesv1.Network { return get(tx.state().networks, id) }

// FindNetworks returns copies of the networks that by selects, ordered by id.
func FindNetworks(tx ReadTx, by By) ([]*typesv1.Network, error) { return find(tx.state().networks, by) }

// CreateNetwork adds the creation of o, stamped with the batch's time.
func (b *Batch) CreateNetwork(o *typesv1.Network) { addCreate(b, networkSchema, o) }

// UpdateNetwork adds an update of o; o.meta.version must be the version read.
func (b *Batch) UpdateNetwork(o *typesv1.Network) { addUpdate(b, networkSchema, o) }

// DeleteNetwork adds the removal of o; o.meta.version must be the version read.
func (b *Batch) DeleteNetwork(o *typesv1.Network) { addRemove(b, networkSchema, o) }
