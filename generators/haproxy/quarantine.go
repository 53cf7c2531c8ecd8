package haproxy

import (
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/backoff"
)

// Quarantine retry delays: a rejected server whose record does not change
// is tried again after a jittered, growing delay (a transient refusal, a
// name that starts resolving), never in a tight loop.
const (
	quarantineRetryBase = 30 * time.Second
	quarantineRetryMax  = 10 * time.Minute
)

// quarantineKind says what HAProxy refused, which decides what becomes of
// the server meanwhile.
type quarantineKind int

const (
	// qRejected: HAProxy's `add server` refused the server, or its host
	// name does not resolve. It is left out of HAProxy and of haproxy.cfg;
	// the runtime sync tries it again.
	qRejected quarantineKind = iota
	// qInvalid: `haproxy -c` rejected the server's line in the rendered
	// file. It is left out of HAProxy and of haproxy.cfg; the file writer
	// tries it again (the runtime API may accept what a reload would
	// refuse: admitting it there would flap).
	qInvalid
	// qRefused: a runtime change of a server HAProxy has (weight, state,
	// address) failed. The server stays as HAProxy has it.
	qRefused
	// qStuck: HAProxy refused to delete a removed server for another
	// reason than its connections. Retried on the backoff.
	qStuck
)

// quarantine is one quarantined server.
type quarantine struct {
	kind    quarantineKind
	service string
	id      string // backend/server
	reason  string
	sig     string // the backend as it was when rejected: a change retries
	since   time.Time
	retryAt time.Time
	bo      *backoff.Backoff
}

// sig identifies what was asked of HAProxy for a server: a record change
// (address, options, weight, state) makes a quarantined server worth
// trying again at once.
func sig(b generators.Backend, addr, opts string) string {
	w := "-"
	if b.Weight != nil {
		w = strconv.Itoa(*b.Weight)
	}
	return addr + "|" + opts + "|" + w + "|" + string(b.State)
}

// quarantineServer sets a server aside (or keeps it aside with a longer
// delay when it failed again with the same record). It logs once per
// record: a retry that fails again only logs at debug.
func (g *Generator) quarantineServer(kind quarantineKind, service, id, signature, reason string) {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	now := time.Now()
	q, ok := g.quarantined[id]
	if ok && q.sig == signature && q.kind == kind {
		q.reason = reason
		q.retryAt = now.Add(q.bo.Next())
		g.log.Debug("quarantined server rejected again", "service", service, "server", id, "reason", reason, "retry_at", q.retryAt)
		return
	}
	if !ok {
		q = &quarantine{since: now, bo: backoff.New(quarantineRetryBase, quarantineRetryMax)}
		g.quarantined[id] = q
		g.m.Quarantines.WithLabelValues(service).Inc()
	}
	if kind == qInvalid {
		g.resync[service] = true // the runtime sync takes it out of HAProxy
	}
	q.kind, q.service, q.id, q.reason, q.sig = kind, service, id, reason, signature
	q.retryAt = now.Add(q.bo.Next())
	g.log.Error("server quarantined: skipped until its record changes; every other server keeps converging",
		"service", service, "server", id, "reason", reason, "retry_at", q.retryAt)
	g.updateQuarantineGauge(service)
}

// release lifts a server's quarantine (it was applied, or left the state).
func (g *Generator) release(id string) {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	q, ok := g.quarantined[id]
	if !ok {
		return
	}
	delete(g.quarantined, id)
	if q.kind == qInvalid {
		g.resync[q.service] = true // the runtime sync adds it
	}
	g.log.Info("server out of quarantine", "service", q.service, "server", id)
	g.updateQuarantineGauge(q.service)
}

// held reports whether a server is quarantined for this very record and
// its retry is not due: it is skipped.
func (g *Generator) held(id, signature string, now time.Time) (quarantineKind, bool) {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	q, ok := g.quarantined[id]
	if !ok || q.sig != signature {
		return 0, false
	}
	if q.kind != qInvalid && !now.Before(q.retryAt) {
		return 0, false // due: the runtime sync tries it again
	}
	return q.kind, true
}

// takeResync reports (once) whether the file writer changed a quarantine
// of service, which the runtime sync must then apply.
func (g *Generator) takeResync(service string) bool {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	if !g.resync[service] {
		return false
	}
	delete(g.resync, service)
	return true
}

// releaseInvalid lifts the qInvalid quarantines a valid file was rendered
// with (their retry was due, so render included them).
func (g *Generator) releaseInvalid(tried map[string]bool) {
	for id := range tried {
		g.release(id)
	}
}

// invalidDue lists the qInvalid quarantines due for a retry: render
// includes them, and a valid file releases them.
func (g *Generator) invalidDue(now time.Time) map[string]bool {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	var out map[string]bool
	for id, q := range g.quarantined {
		if q.kind == qInvalid && !now.Before(q.retryAt) {
			if out == nil {
				out = map[string]bool{}
			}
			out[id] = true
		}
	}
	return out
}

// rejected reports whether a server is to be left out of the file: HAProxy
// refused it with this record (a qInvalid one is tried again when its retry
// is due, listed in trial).
func (g *Generator) rejected(id, signature string, trial map[string]bool) bool {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	q, ok := g.quarantined[id]
	if !ok || q.sig != signature {
		return false
	}
	return q.kind == qRejected || q.kind == qInvalid && !trial[id]
}

// anyQuarantined reports whether any server is quarantined (render skips
// its per-server checks otherwise).
func (g *Generator) anyQuarantined() bool {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	return len(g.quarantined) > 0
}

// quarantineDue reports whether a quarantined server of backend be is due
// for a retry by the runtime sync (qInvalid ones are the file writer's).
func (g *Generator) quarantineDue(be string, now time.Time) bool {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	for id, q := range g.quarantined {
		if q.kind != qInvalid && strings.HasPrefix(id, be+"/") && !now.Before(q.retryAt) {
			return true
		}
	}
	return false
}

// forgetGone drops the quarantine of servers of the service that are no
// longer in its desired state (a server HAProxy refused to delete stays
// while HAProxy has it).
func (g *Generator) forgetGone(service, be string, desired map[string]bool, cur map[string]serverState) {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	changed := false
	for id, q := range g.quarantined {
		if q.service != service {
			continue
		}
		sname, ok := strings.CutPrefix(id, be+"/")
		if !ok || desired[sname] {
			continue
		}
		if _, still := cur[sname]; q.kind != qStuck || !still {
			delete(g.quarantined, id)
			changed = true
		}
	}
	if changed {
		g.updateQuarantineGauge(service)
	}
}

// nextQuarantineRetry is the earliest quarantine retry; zero if none. A
// retry that is due but could not run (its service unknown, a reload
// deferred) is asked for again a removalPoll later, never in a tight loop.
func (g *Generator) nextQuarantineRetry() time.Time {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	var at time.Time
	for _, q := range g.quarantined {
		if at.IsZero() || q.retryAt.Before(at) {
			at = q.retryAt
		}
	}
	if soon := time.Now().Add(removalPoll); !at.IsZero() && at.Before(soon) {
		at = soon
	}
	return at
}

// updateQuarantineGauge sets the service's gauge; g.qmu is held.
func (g *Generator) updateQuarantineGauge(service string) {
	n := 0
	for _, q := range g.quarantined {
		if q.service == service {
			n++
		}
	}
	g.m.Quarantined.WithLabelValues(service).Set(float64(n))
}

// Quarantined implements generators.Quarantiner.
func (g *Generator) Quarantined() []generators.Quarantined {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	out := make([]generators.Quarantined, 0, len(g.quarantined))
	for id, q := range g.quarantined {
		server := id
		if i := strings.IndexByte(id, '/'); i >= 0 {
			server = id[i+1:]
		}
		out = append(out, generators.Quarantined{Service: q.service, Server: server, Reason: q.reason, Since: q.since, RetryAt: q.retryAt})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Server < out[j].Server
	})
	return out
}
