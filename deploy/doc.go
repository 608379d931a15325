// Package deploy holds shoal's orchestrators: the decisions that turn a
// service's spec into tasks. Replicated services get numbered slots, global
// services one task per eligible node; tasks that end are restarted by the
// service's restart policy; a spec change rolls out batch by batch under the
// update config and rolls back on failure; a removed service's tasks are shut
// down and deleted; ended tasks beyond the history limit are deleted.
//
// All of it is one pure function, [Reconcile], shaped like nomad's
// scheduler/reconcile: it takes the service, its tasks, the nodes and the
// time, and returns what to write. It holds no store, reads no clock and
// starts no goroutine, so a table test can cover every case, and everything
// it needs to remember lives in the store (tasks' states and times, the
// service's update status), never in memory: a new leader picks up a rolling
// update where the old one left it.
//
// The behaviour follows Docker swarm (swarmkit's replicated, global, restart
// and update orchestrators); where a stateless decision has to differ, the
// code says so next to the rule.
package deploy
