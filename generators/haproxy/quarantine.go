package haproxy

import (
	"log/slog"
	"sort"
	"strconv"
	"sync"
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

// serverKey names one server of one backend: what the runtime API calls
// backend/server. Typed, so that finding a backend's servers never parses
// "be/name" strings.
type serverKey struct {
	backend, server string
}

func (k serverKey) String() string { return k.backend + "/" + k.server }

// quarantine is one quarantined server.
type quarantine struct {
	kind    quarantineKind
	service string
	reason  string
	sig     string // the backend as it was when rejected: a change retries
	since   time.Time
	retryAt time.Time
	bo      *backoff.Backoff
}

// quarantines are the servers set aside, kept by the runtime sync (which
// quarantines what HAProxy refuses at runtime) and read by render and the
// config file's writer (which quarantines what haproxy -c refuses). It
// has its own lock: the background writer reaches it without the apply
// lock.
type quarantines struct {
	log *slog.Logger
	m   *Metrics

	mu          sync.Mutex
	quarantined map[serverKey]*quarantine
	resync      map[string]bool // services whose qInvalid quarantines changed
}

func newQuarantines(log *slog.Logger, m *Metrics) *quarantines {
	return &quarantines{log: log, m: m, quarantined: map[serverKey]*quarantine{}, resync: map[string]bool{}}
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

// put sets a server aside (or keeps it aside with a longer delay when it
// failed again with the same record). It logs once per record: a retry
// that fails again only logs at debug.
func (qs *quarantines) put(kind quarantineKind, service string, key serverKey, signature, reason string) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	now := time.Now()
	q, ok := qs.quarantined[key]
	if ok && q.sig == signature && q.kind == kind {
		q.reason = reason
		q.retryAt = now.Add(q.bo.Next())
		qs.log.Debug("quarantined server rejected again", "service", service, "server", key.String(), "reason", reason, "retry_at", q.retryAt)
		return
	}
	if !ok {
		q = &quarantine{since: now, bo: backoff.New(quarantineRetryBase, quarantineRetryMax)}
		qs.quarantined[key] = q
		qs.m.Quarantines.WithLabelValues(service).Inc()
	}
	if kind == qInvalid {
		qs.resync[service] = true // the runtime sync takes it out of HAProxy
	}
	q.kind, q.service, q.reason, q.sig = kind, service, reason, signature
	q.retryAt = now.Add(q.bo.Next())
	qs.log.Error("server quarantined: skipped until its record changes; every other server keeps converging",
		"service", service, "server", key.String(), "reason", reason, "retry_at", q.retryAt)
	qs.updateGauge(service)
}

// release lifts a server's quarantine (it was applied, or left the state).
func (qs *quarantines) release(key serverKey) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q, ok := qs.quarantined[key]
	if !ok {
		return
	}
	delete(qs.quarantined, key)
	if q.kind == qInvalid {
		qs.resync[q.service] = true // the runtime sync adds it
	}
	qs.log.Info("server out of quarantine", "service", q.service, "server", key)
	qs.updateGauge(q.service)
}

// held reports whether a server is quarantined for this very record and
// its retry is not due: it is skipped.
func (qs *quarantines) held(key serverKey, signature string, now time.Time) (quarantineKind, bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q, ok := qs.quarantined[key]
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
func (qs *quarantines) takeResync(service string) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if !qs.resync[service] {
		return false
	}
	delete(qs.resync, service)
	return true
}

// releaseAll lifts the quarantines of keys: the qInvalid ones a valid file
// was rendered with (their retry was due, so render included them).
func (qs *quarantines) releaseAll(keys map[serverKey]bool) {
	for key := range keys {
		qs.release(key)
	}
}

// invalidDue lists the qInvalid quarantines due for a retry: render
// includes them, and a valid file releases them.
func (qs *quarantines) invalidDue(now time.Time) map[serverKey]bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var out map[serverKey]bool
	for key, q := range qs.quarantined {
		if q.kind == qInvalid && !now.Before(q.retryAt) {
			if out == nil {
				out = map[serverKey]bool{}
			}
			out[key] = true
		}
	}
	return out
}

// rejected reports whether a server is to be left out of the file: HAProxy
// refused it with this record (a qInvalid one is tried again when its retry
// is due, listed in trial).
func (qs *quarantines) rejected(key serverKey, signature string, trial map[serverKey]bool) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q, ok := qs.quarantined[key]
	if !ok || q.sig != signature {
		return false
	}
	return q.kind == qRejected || q.kind == qInvalid && !trial[key]
}

// any reports whether any server is quarantined (render and the runtime
// sync skip their per-server checks otherwise).
func (qs *quarantines) any() bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return len(qs.quarantined) > 0
}

// due reports whether a quarantined server of backend be is due for a
// retry by the runtime sync (qInvalid ones are the file writer's).
func (qs *quarantines) due(be string, now time.Time) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	for key, q := range qs.quarantined {
		if q.kind != qInvalid && key.backend == be && !now.Before(q.retryAt) {
			return true
		}
	}
	return false
}

// forgetGone drops the quarantine of servers of the service that are no
// longer in its desired state (a server HAProxy refused to delete stays
// while HAProxy has it).
func (qs *quarantines) forgetGone(service, be string, desired map[string]bool, cur map[string]serverState) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	changed := false
	for key, q := range qs.quarantined {
		if q.service != service || key.backend != be || desired[key.server] {
			continue
		}
		if _, still := cur[key.server]; q.kind != qStuck || !still {
			delete(qs.quarantined, key)
			changed = true
		}
	}
	if changed {
		qs.updateGauge(service)
	}
}

// nextRetry is the earliest quarantine retry; zero if none. A retry that
// is due but could not run (its service unknown, a reload deferred) is
// asked for again a removalPoll later, never in a tight loop.
func (qs *quarantines) nextRetry() time.Time {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var at time.Time
	for _, q := range qs.quarantined {
		if at.IsZero() || q.retryAt.Before(at) {
			at = q.retryAt
		}
	}
	if soon := time.Now().Add(removalPoll); !at.IsZero() && at.Before(soon) {
		at = soon
	}
	return at
}

// updateGauge sets the service's gauge; qs.mu is held.
func (qs *quarantines) updateGauge(service string) {
	n := 0
	for _, q := range qs.quarantined {
		if q.service == service {
			n++
		}
	}
	qs.m.Quarantined.WithLabelValues(service).Set(float64(n))
}

// list is every quarantined server, by service and server.
func (qs *quarantines) list() []generators.Quarantined {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	out := make([]generators.Quarantined, 0, len(qs.quarantined))
	for key, q := range qs.quarantined {
		out = append(out, generators.Quarantined{Service: q.service, Server: key.server, Reason: q.reason, Since: q.since, RetryAt: q.retryAt})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].Server < out[j].Server
	})
	return out
}
