package haproxy

import (
	"fmt"
	"strings"
)

// opKind is one kind of runtime API command the generator sends. Commands
// are built and judged as typed values; the text is made only to send.
type opKind int

const (
	opSetAddr opKind = iota
	opSetWeight
	opSetState
	opAdd
	opDel
	opShutdown
	opEnableHealth
	opEnableAgent
)

// label is the op label of synapse_haproxy_runtime_ops_total (the first
// two words of the command, as before typed commands).
func (k opKind) label() string {
	switch k {
	case opSetAddr, opSetWeight, opSetState:
		return "set server"
	case opAdd:
		return "add server"
	case opDel:
		return "del server"
	case opShutdown:
		return "shutdown sessions"
	case opEnableHealth:
		return "enable health"
	case opEnableAgent:
		return "enable agent"
	}
	return "unknown"
}

// command is one runtime API command about one server.
type command struct {
	kind opKind
	id   string // backend/server
	// arg: the address and port (opSetAddr: "IP port N"), the weight
	// (opSetWeight), the state (opSetState), or the address and
	// parameters (opAdd).
	arg string
}

func (c command) String() string {
	switch c.kind {
	case opSetAddr:
		return "set server " + c.id + " addr " + c.arg
	case opSetWeight:
		return "set server " + c.id + " weight " + c.arg
	case opSetState:
		return "set server " + c.id + " state " + c.arg
	case opAdd:
		return "add server " + c.id + " " + c.arg
	case opDel:
		return "del server " + c.id
	case opShutdown:
		return "shutdown sessions server " + c.id
	case opEnableHealth:
		return "enable health " + c.id
	case opEnableAgent:
		return "enable agent " + c.id
	}
	panic(fmt.Sprintf("haproxy: unknown command kind %d", c.kind))
}

// replyResult is what HAProxy's reply to a command means.
type replyResult int

const (
	replyOK replyResult = iota
	// replyBusy: `del server` refused because connections are attached;
	// it succeeds once they end (not an error).
	replyBusy
	replyError
)

// judge reads HAProxy 2.6's reply to c. The runtime API has no status
// codes: success is an empty reply, or a fixed sentence for the commands
// that print one.
func (c command) judge(reply string) replyResult {
	switch c.kind {
	case opAdd:
		if strings.Contains(reply, "New server registered") {
			return replyOK
		}
	case opDel:
		if strings.Contains(reply, "Server deleted") {
			return replyOK
		}
		if strings.Contains(reply, "connections attached") {
			return replyBusy
		}
	case opSetAddr:
		if reply == "" || strings.Contains(reply, "changed") || strings.Contains(reply, "no need to change") {
			return replyOK
		}
	default:
		if reply == "" {
			return replyOK
		}
	}
	return replyError
}

func strs(cmds []command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.String()
	}
	return out
}
