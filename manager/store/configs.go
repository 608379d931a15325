package store

import (
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Config names are unique (without case), as Docker's are.
var configSchema = &schema[*typesv1.Config]{
	kind:        "config",
	uniqueNames: true,
	name:        func(o *typesv1.Config) string { return o.GetSpec().GetAnnotations().GetName() },
	stack:       func(o *typesv1.Config) string { return label(o.GetSpec().GetAnnotations(), StackLabel) },
	setMeta:     func(o *typesv1.Config, m *typesv1.Meta) { o.Meta = m },
	stub:        func(id string, m *typesv1.Meta) *typesv1.Config { return &typesv1.Config{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, o *typesv1.Config) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Config{Config: o}}
	},
}

// GetConfig returns a copy of the config with that id, or nil.
func GetConfig(tx ReadTx, id string) *typesv1.Config { return get(tx.state().configs, id) }

// FindConfigs returns copies of the configs that by selects, ordered by id.
func FindConfigs(tx ReadTx, by By) ([]*typesv1.Config, error) { return find(tx.state().configs, by) }

// CreateConfig adds the creation of o, stamped with the batch's time.
func (b *Batch) CreateConfig(o *typesv1.Config) { addCreate(b, configSchema, o) }

// UpdateConfig adds an update of o; o.meta.version must be the version read.
func (b *Batch) UpdateConfig(o *typesv1.Config) { addUpdate(b, configSchema, o) }

// DeleteConfig adds the removal of o; o.meta.version must be the version read.
func (b *Batch) DeleteConfig(o *typesv1.Config) { addRemove(b, configSchema, o) }
