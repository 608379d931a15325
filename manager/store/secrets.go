package store

import (
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Secret names are unique (without case): Docker refuses a second secret
// of a name, and services refer to secrets by name.
var secretSchema = &schema[*typesv1.Secret]{
	kind:        "secret",
	uniqueNames: true,
	name:        func(o *typesv1.Secret) string { return o.GetSpec().GetAnnotations().GetName() },
	stack:       func(o *typesv1.Secret) string { return label(o.GetSpec().GetAnnotations(), StackLabel) },
	setMeta:     func(o *typesv1.Secret, m *typesv1.Meta) { o.Meta = m },
	stub:        func(id string, m *typesv1.Meta) *typesv1.Secret { return &typesv1.Secret{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, o *typesv1.Secret) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Secret{Secret: o}}
	},
}

// GetSecret returns a copy of the secret with that id, or nil.
func GetSecret(tx ReadTx, id string) *typesv1.Secret { return get(tx.state().secrets, id) }

// FindSecrets returns copies of the secrets that by selects, ordered by id.
func FindSecrets(tx ReadTx, by By) ([]*typesv1.Secret, error) { return find(tx.state().secrets, by) }

// CreateSecret adds the creation of o, stamped with the batch's time.
func (b *Batch) CreateSecret(o *typesv1.Secret) { addCreate(b, secretSchema, o) }

// UpdateSecret adds an update of o; o.meta.version must be the version read.
func (b *Batch) UpdateSecret(o *typesv1.Secret) { addUpdate(b, secretSchema, o) }

// DeleteSecret adds the removal of o; o.meta.version must be the version read.
func (b *Batch) DeleteSecret(o *typesv1.Secret) { addRemove(b, secretSchema, o) }
