package cli

import (
	"strings"

	typesv1 "github.com/shoal-dev/shoal/proto/types/v1"
)

// stackLabel marks a stack's objects, the same label Docker uses so that a
// Docker Engine API translation can find them.
const stackLabel = "com.docker.stack.namespace"

// enumWord turns a proto enum name into Docker's lowercase word:
// TASK_STATE_RUNNING → "running", NODE_AVAILABILITY_DRAIN → "drain".
func enumWord(name, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", "-")
}

func taskStateWord(s typesv1.TaskState) string {
	return enumWord(s.String(), "TASK_STATE_")
}

func nodeStateWord(s typesv1.NodeState) string {
	return enumWord(s.String(), "NODE_STATE_")
}

func availabilityWord(a typesv1.NodeAvailability) string {
	return enumWord(a.String(), "NODE_AVAILABILITY_")
}

func reachabilityWord(r typesv1.Reachability) string {
	return enumWord(r.String(), "REACHABILITY_")
}

func roleWord(r typesv1.NodeRole) string {
	return enumWord(r.String(), "NODE_ROLE_")
}

func protocolWord(p typesv1.PortConfig_Protocol) string {
	return enumWord(p.String(), "PROTOCOL_")
}

func publishModeWord(m typesv1.PortConfig_PublishMode) string {
	return enumWord(m.String(), "PUBLISH_MODE_")
}

// stateRank orders task states as docker/cli's progress code does; 0 means
// a state the progress display does not know (and skips).
var stateRank = map[typesv1.TaskState]int{
	typesv1.TaskState_TASK_STATE_NEW:       1,
	typesv1.TaskState_TASK_STATE_PENDING:   3,
	typesv1.TaskState_TASK_STATE_ASSIGNED:  4,
	typesv1.TaskState_TASK_STATE_ACCEPTED:  5,
	typesv1.TaskState_TASK_STATE_PREPARING: 6,
	typesv1.TaskState_TASK_STATE_STARTING:  8,
	typesv1.TaskState_TASK_STATE_RUNNING:   9,
	typesv1.TaskState_TASK_STATE_COMPLETE:  10,
	typesv1.TaskState_TASK_STATE_SHUTDOWN:  11,
	typesv1.TaskState_TASK_STATE_FAILED:    12,
	typesv1.TaskState_TASK_STATE_REJECTED:  13,
	typesv1.TaskState_TASK_STATE_REMOVE:    14,
	typesv1.TaskState_TASK_STATE_ORPHANED:  15,
}

// terminalState reports a state after RUNNING: the task is over.
func terminalState(s typesv1.TaskState) bool {
	return stateRank[s] > stateRank[typesv1.TaskState_TASK_STATE_RUNNING]
}

func serviceName(s *typesv1.Service) string {
	return s.GetSpec().GetAnnotations().GetName()
}
