package haproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// RuntimeClient talks to HAProxy's stats socket. All commands of one Run
// go over one connection in prompt mode, pipelined: HAProxy answers each in
// turn, followed by a prompt, so every reply is checked on its own while the
// batch costs about one round trip. (client-native's runtime client opens
// one connection per command: BenchmarkRuntimeClients in bench/ compares
// the two on the same HAProxy.)
type RuntimeClient struct {
	Socket  string        // the stats socket (level admin)
	Timeout time.Duration // for a whole Run; zero: 10s
}

const promptSep = "\n> "

// Run sends cmds and returns one reply per command, in order. A command
// may not hold a line break or ';' (HAProxy would split it).
func (r RuntimeClient) Run(ctx context.Context, cmds ...string) ([]string, error) {
	for _, c := range cmds {
		if strings.ContainsAny(c, "\n\r;") {
			return nil, fmt.Errorf("runtime command %q has a line break or ';'", c)
		}
	}
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", r.Socket)
	if err != nil {
		return nil, fmt.Errorf("stats socket %s: %w", r.Socket, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// Write in the background: a large batch fills HAProxy's output
	// buffer unless we read at the same time.
	werr := make(chan error, 1)
	go func() {
		var b strings.Builder
		b.WriteString("prompt\n")
		for _, c := range cmds {
			b.WriteString(c)
			b.WriteByte('\n')
		}
		b.WriteString("quit\n")
		_, err := io.WriteString(conn, b.String())
		werr <- err
	}()
	out, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return nil, fmt.Errorf("stats socket %s: %w", r.Socket, err)
	}
	if err := <-werr; err != nil {
		return nil, fmt.Errorf("stats socket %s: %w", r.Socket, err)
	}
	parts := strings.Split(string(out), promptSep)
	// parts[0] answers "prompt"; the last holds whatever followed the final
	// prompt ("quit" prints nothing).
	if len(parts) < len(cmds)+1 {
		return nil, fmt.Errorf("stats socket %s: %d replies for %d commands", r.Socket, len(parts)-1, len(cmds))
	}
	replies := make([]string, len(cmds))
	for i := range cmds {
		replies[i] = strings.TrimRight(parts[i+1], "\n")
	}
	return replies, nil
}

// serverState is one server as `show servers state` reports it.
type serverState struct {
	Backend, Name string
	ID            int
	Addr          string // IP, or "-" when unresolved
	Port          int
	OpState       int // 0 stopped, 1 starting, 2 running, 3 stopping
	AdminState    int // SRV_ADMF_* bits
	Weight        int // user weight
}

// HAProxy's server admin state bits (include/haproxy/server-t.h).
const (
	admFMaint = 0x01 // forced (the runtime API, or `disabled` in the config)
	admIMaint = 0x02 // inherited from a tracked server
	admCMaint = 0x04 // a memo of `disabled` in the config: not maintenance by itself
	admFDrain = 0x08
	admIDrain = 0x10
	admRMaint = 0x20 // address resolution failed
	// admMaint is HAProxy's SRV_ADMF_MAINT: every maintenance flag but
	// CMAINT. (0x40 is not maintenance either: the FQDN was changed.)
	admMaint = admFMaint | admIMaint | admRMaint
	admDrain = admFDrain | admIDrain
)

// state maps the admin bits to ready, drain or maint: what the server
// does now.
func (s serverState) state() string {
	switch {
	case s.AdminState&admMaint != 0:
		return "maint"
	case s.AdminState&admDrain != 0:
		return "drain"
	}
	return "ready"
}

// forced is the state set on the server itself (by `set server … state`,
// or the config), which is what synapse sets: an inherited maint or drain
// (a tracked server) or a resolution failure is not undone by `set server
// … state ready`, so comparing against it would resend that forever.
func (s serverState) forced() string {
	switch {
	case s.AdminState&admFMaint != 0:
		return "maint"
	case s.AdminState&admFDrain != 0:
		return "drain"
	}
	return "ready"
}

// parseServersState reads `show servers state` (format version 1) into
// backend → server name → state.
func parseServersState(out string) (map[string]map[string]serverState, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "1" {
		return nil, fmt.Errorf("show servers state: unknown format %.80q", out)
	}
	res := map[string]map[string]serverState{}
	for _, line := range lines[1:] {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 19 {
			return nil, fmt.Errorf("show servers state: short line %q", line)
		}
		var s serverState
		var errs [5]error
		s.Backend, s.Name, s.Addr = f[1], f[3], f[4]
		s.ID, errs[0] = strconv.Atoi(f[2])
		s.OpState, errs[1] = strconv.Atoi(f[5])
		s.AdminState, errs[2] = strconv.Atoi(f[6])
		s.Weight, errs[3] = strconv.Atoi(f[7])
		s.Port, errs[4] = strconv.Atoi(f[18])
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("show servers state: line %q: %w", line, err)
		}
		if res[s.Backend] == nil {
			res[s.Backend] = map[string]serverState{}
		}
		res[s.Backend][s.Name] = s
	}
	return res, nil
}
