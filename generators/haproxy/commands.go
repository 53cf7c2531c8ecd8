package haproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
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
	key  serverKey
	// arg: the address and port (opSetAddr: "IP port N"), the weight
	// (opSetWeight), the state (opSetState), or the address and
	// parameters (opAdd).
	arg string
}

func (c command) String() string {
	switch c.kind {
	case opSetAddr:
		return "set server " + c.key.String() + " addr " + c.arg
	case opSetWeight:
		return "set server " + c.key.String() + " weight " + c.arg
	case opSetState:
		return "set server " + c.key.String() + " state " + c.arg
	case opAdd:
		return "add server " + c.key.String() + " " + c.arg
	case opDel:
		return "del server " + c.key.String()
	case opShutdown:
		return "shutdown sessions server " + c.key.String()
	case opEnableHealth:
		return "enable health " + c.key.String()
	case opEnableAgent:
		return "enable agent " + c.key.String()
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

// backendMissing reports whether HAProxy's reply to `show servers state
// BACKEND` says it has no such backend (it loaded an older config than
// the file).
func backendMissing(reply string) bool {
	return strings.HasPrefix(strings.TrimSpace(reply), "Can't find backend")
}

func strs(cmds []command) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = c.String()
	}
	return out
}

// parseShowProc reads the master CLI's `show proc` and returns the PID of
// the current worker: the first of the "# workers" section (older workers
// that still finish their connections are listed under "# old workers").
func parseShowProc(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	inWorkers := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "# workers"):
			inWorkers = true
		case strings.HasPrefix(l, "#"):
			inWorkers = false
		case inWorkers:
			f := strings.Fields(l)
			if len(f) >= 2 && f[1] == "worker" {
				return strconv.Atoi(f[0])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("show proc: no current worker")
}

// parseInfoPID reads the Pid of `show info`.
func parseInfoPID(out string) (int, error) {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Pid: "); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("show info: no Pid")
}
