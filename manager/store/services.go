package store

import (
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Service names are unique (without case), since users and DNS address
// services by name.
var serviceSchema = &schema[*typesv1.Service]{
	kind:        "service",
	uniqueNames: true,
	name:        func(o *typesv1.Service) string { return o.GetSpec().GetAnnotations().GetName() },
	stack:       func(o *typesv1.Service) string { return label(o.GetSpec().GetAnnotations(), StackLabel) },
	setMeta:     func(o *typesv1.Service, m *typesv1.Meta) { o.Meta = m },
	stub:        func(id string, m *typesv1.Meta) *typesv1.Service { return &typesv1.Service{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, o *typesv1.Service) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Service{Service: o}}
	},
}

// GetService returns a copy of the service with that id, or nil.
func GetService(tx ReadTx, id string) *typesv1.Service { return get(tx.state().services, id) }

// FindServices returns copies of the services that by selects, ordered by id.
func FindServices(tx ReadTx, by By) ([]*typesv1.Service, error) { return find(tx.state().services, by) }

// CreateService adds the creation of o, stamped with the batch's time.
func (b *Batch) CreateService(o *typesv1.Service) { addCreate(b, serviceSchema, o) }

// UpdateService adds an update of o; o.meta.version must be the version read.
func (b *Batch) UpdateService(o *typesv1.Service) { addUpdate(b, serviceSchema, o) }

// DeleteService adds the removal of o; o.meta.version must be the version read.
func (b *Batch) DeleteService(o *typesv1.Service) { addRemove(b, serviceSchema, o) }
