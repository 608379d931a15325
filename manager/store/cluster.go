package store

import (
	storev1 "github.com/shoal-dev/shoal/proto/store/v1"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// Clusters hold the cluster-wide settings, join tokens and CA; there is
// normally one. Their names are not unique: the store does not police what
// only the manager ever writes.
var clusterSchema = &schema[*typesv1.Cluster]{
	kind:        "cluster",
	uniqueNames: false,
	name:        func(o *typesv1.Cluster) string { return o.GetSpec().GetAnnotations().GetName() },
	stack:       func(*typesv1.Cluster) string { return "" },
	setMeta:     func(o *typesv1.Cluster, m *typesv1.Meta) { o.Meta = m },
	stub:        func(id string, m *typesv1.Meta) *typesv1.Cluster { return &typesv1.Cluster{Id: id, Meta: m} },
	action: func(k storev1.StoreAction_Kind, o *typesv1.Cluster) *storev1.StoreAction {
		return &storev1.StoreAction{Kind: k, Target: &storev1.StoreAction_Cluster{Cluster: o}}
	},
}

// GetCluster returns a copy of the cluster with that id, or nil.
func GetCluster(tx ReadTx, id string) *typesv1.Cluster { return get(tx.state().clusters, id) }

// FindClusters returns copies of the clusters that by selects, ordered by id.
func FindClusters(tx ReadTx, by By) ([]*typesv1.Cluster, error) { return find(tx.state().clusters, by) }

// CreateCluster adds the creation of o, stamped with the batch's time.
func (b *Batch) CreateCluster(o *typesv1.Cluster) { addCreate(b, clusterSchema, o) }

// UpdateCluster adds an update of o; o.meta.version must be the version read.
func (b *Batch) UpdateCluster(o *typesv1.Cluster) { addUpdate(b, clusterSchema, o) }

// DeleteCluster adds the removal of o; o.meta.version must be the version read.
func (b *Batch) DeleteCluster(o *typesv1.Cluster) { addRemove(b, clusterSchema, o) }
