package haproxy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/syncstack/syncstack/generators"
)

// ValidationError is a config `haproxy -c` rejected, with the lines of
// the file its alerts name.
type ValidationError struct {
	File   string
	Output string         // HAProxy's messages (trimmed)
	Lines  map[int]string // line number → the alert that names it
	Err    error          // of the haproxy process
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("haproxy -c: %v: %s", e.Err, e.Output)
}

func (e *ValidationError) Unwrap() error { return e.Err }

// alertLine matches an ALERT of haproxy -c and the place it names:
// "[ALERT]    (123) : config : [/path/haproxy.cfg:42] : 'server web/a' : could not resolve address 'x'."
var alertLine = regexp.MustCompile(`\[ALERT\][^:]*:[^:]*: \[(.+):(\d+)\] : (.*)$`)

func newValidationError(file, out string, err error) *ValidationError {
	msg := strings.TrimSpace(out)
	if len(msg) > 2000 {
		msg = msg[:2000] + "…"
	}
	e := &ValidationError{File: file, Output: msg, Lines: map[int]string{}, Err: err}
	for _, l := range strings.Split(out, "\n") {
		m := alertLine.FindStringSubmatch(strings.TrimSpace(l))
		if m == nil || m[1] != file {
			continue
		}
		if n, err := strconv.Atoi(m[2]); err == nil {
			if _, seen := e.Lines[n]; !seen {
				e.Lines[n] = m[3]
			}
		}
	}
	return e
}

// badServer is a server line haproxy -c rejected.
type badServer struct {
	service     string
	key         serverKey
	sig, reason string
}

// serversAt maps the lines a validation error names in content (as render
// wrote it for st) to the servers of st on them. Lines that are not a
// rendered server's (the operator's own lines, a server kept verbatim from
// the old file) map to nothing.
func (g *Generator) serversAt(content string, verr *ValidationError, st generators.State) []badServer {
	if len(verr.Lines) == 0 {
		return nil
	}
	byBackend := map[string]string{}
	for _, name := range g.serviceNames() {
		byBackend[g.services[name].BackendName] = name
	}
	var out []badServer
	for _, sl := range serverLines(content) {
		f, section := sl.fields, sl.backend
		reason, named := verr.Lines[sl.line]
		if !named {
			continue
		}
		service, ok := byBackend[section]
		if !ok {
			continue
		}
		svc := st.Services.Get(service)
		if g.unknown(svc) {
			continue // its lines are the old file's, verbatim
		}
		opts := g.services[service].ServerOptions.String()
		for _, b := range svc.Backends {
			if b.ServerName() != f[1] {
				continue
			}
			addr, err := g.res.addrOf(b.Host)
			if err != nil {
				break
			}
			out = append(out, badServer{service: service, key: serverKey{section, f[1]}, sig: sig(b, addr, optsIdentity(b, opts)), reason: "haproxy -c: " + reason})
			break
		}
	}
	return out
}
