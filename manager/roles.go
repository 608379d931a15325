package manager

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/manager/ca"
	"github.com/shoal-dev/shoal/manager/store"
	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// ErrRestart is what Run returns when the node changed role (promote,
// demote) and must start again as what it now is; shoal-manager then
// executes itself anew with the same data dir. Containers live on and are
// re-adopted.
var ErrRestart = errors.New("the node's role changed: restart")

// reconcileRoles is the leader's role controller: it makes each node's
// role its desired one (`node promote`, `node demote`). A promoted
// worker's role changes in the store, and the node itself then gets a
// manager certificate and restarts into Raft. A demoted manager becomes a
// worker in the store first, so that it learns it through Raft, and is
// then taken out of the Raft configuration.
func (m *Manager) reconcileRoles(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		m.reconcileRolesOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (m *Manager) reconcileRolesOnce(ctx context.Context) {
	var nodes []*typesv1.Node
	m.store.View(func(tx store.ReadTx) { nodes, _ = store.FindNodes(tx, store.All) })
	servers, _ := m.raft.Servers()
	inRaft := map[string]bool{}
	for _, s := range servers {
		inRaft[string(s.ID)] = true
	}
	for _, n := range nodes {
		want := n.GetSpec().GetDesiredRole()
		switch {
		case want == typesv1.NodeRole_NODE_ROLE_MANAGER && n.GetRole() == typesv1.NodeRole_NODE_ROLE_WORKER:
			m.setRole(ctx, n.GetId(), typesv1.NodeRole_NODE_ROLE_MANAGER)
		case want == typesv1.NodeRole_NODE_ROLE_WORKER && n.GetRole() == typesv1.NodeRole_NODE_ROLE_MANAGER:
			if n.GetId() == m.state.NodeID {
				// The leader demoted: another manager finishes the job.
				if err := m.raft.LeadershipTransfer(); err != nil {
					m.log.Warn("hand over leadership to be demoted", "err", err)
				}
				return
			}
			// Out of Raft first, while the node still votes, so that
			// the smaller configuration commits with today's quorum; the
			// node sees itself gone from the configuration and restarts
			// as a worker.
			if inRaft[n.GetId()] {
				if err := m.raft.RemoveServer(n.GetId()); err != nil {
					m.log.Warn("remove demoted manager from raft", "node.id", n.GetId(), "err", err)
					continue
				}
				m.log.Info("demoted manager removed from raft", "node.id", n.GetId())
			}
			m.setRole(ctx, n.GetId(), typesv1.NodeRole_NODE_ROLE_WORKER)
		case n.GetRole() == typesv1.NodeRole_NODE_ROLE_WORKER && inRaft[n.GetId()]:
			if err := m.raft.RemoveServer(n.GetId()); err != nil {
				m.log.Warn("remove worker from raft", "node.id", n.GetId(), "err", err)
			}
		}
	}
}

func (m *Manager) setRole(ctx context.Context, id string, role typesv1.NodeRole) {
	for attempt := 0; attempt < 5; attempt++ {
		var n *typesv1.Node
		m.store.View(func(tx store.ReadTx) { n = store.GetNode(tx, id) })
		if n == nil || n.GetRole() == role {
			return
		}
		n.Role = role
		if role == typesv1.NodeRole_NODE_ROLE_WORKER {
			n.ManagerStatus = nil
		}
		b := m.store.NewBatch()
		b.UpdateNode(n)
		_, err := m.proposer.Propose(ctx, b.Proto())
		if err == nil {
			m.log.Info("node role changed", "node.id", id, "role", role)
			return
		}
		if !errors.Is(err, store.ErrSequenceConflict) {
			m.log.Warn("change node role", "node.id", id, "err", err)
			return
		}
	}
}

// watchOwnRole restarts this node when the store says its role is no
// longer the one it runs as: a new certificate for the new role first,
// then node.json, then ErrRestart through restart.
func (m *Manager) watchOwnRole(ctx context.Context, restart func()) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var n *typesv1.Node
		m.store.View(func(tx store.ReadTx) { n = store.GetNode(tx, m.state.NodeID) })
		if n == nil {
			continue
		}
		role := m.roleOf(n)
		if role == m.state.Role {
			continue
		}
		m.log.Info("this node's role changed; restarting", "role", role)
		if err := m.renew(ctx); err != nil {
			m.log.Warn("certificate for the new role", "err", err)
			continue
		}
		if got := m.ident.Node().Role; got != role {
			m.log.Warn("renewed certificate has the old role; trying again", "role", got)
			continue
		}
		m.state.Role = role
		m.state.Managers = m.managerAddrs(m.store)
		m.state.RaftJoin = role == ca.RoleManager
		if err := writeFileAtomic(m.statePath(), mustJSON(m.state)); err != nil {
			m.log.Error("write node state", "err", err)
			continue
		}
		if role == ca.RoleWorker {
			// A later promotion starts Raft afresh.
			m.removeRaftDir = true
		}
		restart()
		return
	}
}

// dropRaftState removes the Raft directory of a demoted manager, once
// Raft is shut down.
func (m *Manager) dropRaftState() {
	if m.removeRaftDir {
		_ = os.RemoveAll(filepath.Join(m.cfg.DataDir, "raft"))
	}
}

// roleOf is the role node n (this node) is to run as: its role in the
// store, except that a manager being demoted is a worker as soon as Raft
// no longer counts it (it does not see the store say so: its Raft stops
// receiving entries).
func (m *Manager) roleOf(n *typesv1.Node) string {
	if n.GetRole() == typesv1.NodeRole_NODE_ROLE_WORKER {
		return ca.RoleWorker
	}
	if m.raft != nil && n.GetSpec().GetDesiredRole() == typesv1.NodeRole_NODE_ROLE_WORKER {
		servers, err := m.raft.Servers()
		if err == nil {
			for _, s := range servers {
				if string(s.ID) == m.state.NodeID {
					return ca.RoleManager
				}
			}
			return ca.RoleWorker
		}
	}
	return ca.RoleManager
}
