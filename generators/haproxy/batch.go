package haproxy

import (
	"context"
	"fmt"
	"time"
)

// A batch is one sync's typed commands, sent in one pipelined round trip;
// HAProxy's reply to each decides what became of its server.

// send runs the batch, then the additions that replace servers it
// deleted.
func (s *runtimeSyncer) send(ctx context.Context, b *batch) error {
	if err := s.run(ctx, b, b.cmds); err != nil {
		return err
	}
	var then []command
	for _, key := range b.deleted {
		then = append(then, b.then[key]...)
	}
	return s.run(ctx, b, then)
}

// settle quarantines the servers whose commands HAProxy refused and
// releases the others.
func (s *runtimeSyncer) settle(b *batch) {
	for key, a := range b.attempted {
		if f, failed := b.failed[key]; failed {
			s.q.put(f.kind, a.service, key, a.sig, fmt.Sprintf("%q: %s", f.cmd.String(), f.reply))
		} else {
			s.q.release(key)
		}
	}
}

// removedSig is the signature of a server being removed.
const removedSig = "\x00removed"

// attempt is a server the sync asks HAProxy to change.
type attempt struct {
	service, sig, ident string
}

// failure is a server's first refused command.
type failure struct {
	kind  quarantineKind
	cmd   command
	reply string
}

// batch is one sync's commands and what became of them.
type batch struct {
	cmds      []command
	attempted map[serverKey]attempt
	then      map[serverKey][]command // to send once the server of that key is deleted
	deleted   []serverKey             // deleted by this sync
	failed    map[serverKey]failure
	// cookie: services whose backend persists by cookie; a server added
	// to one at runtime has no cookie until a reload (ReloadCookie).
	cookie map[string]bool
}

func newBatch() *batch {
	return &batch{attempted: map[serverKey]attempt{}, then: map[serverKey][]command{}, failed: map[serverKey]failure{}, cookie: map[string]bool{}}
}

// run sends cmds in one pipelined round trip and records each reply.
func (s *runtimeSyncer) run(ctx context.Context, b *batch, cmds []command) error {
	if len(cmds) == 0 {
		return nil
	}
	start := time.Now()
	replies, err := s.client.Run(ctx, strs(cmds)...)
	if err != nil {
		return err
	}
	s.m.RuntimeBatchSeconds.Observe(time.Since(start).Seconds())
	nfailed := 0
	for i, c := range cmds {
		if !s.record(b, c, replies[i]) {
			nfailed++
		}
	}
	s.log.Debug("runtime changes applied", "commands", len(cmds), "failed", nfailed, "took", time.Since(start))
	return nil
}

// record counts HAProxy's reply to c and keeps what it means for the
// server; false: HAProxy refused c.
func (s *runtimeSyncer) record(b *batch, c command, reply string) bool {
	op := c.kind.label()
	switch c.judge(reply) {
	case replyOK:
		s.m.RuntimeOps.WithLabelValues(op, "ok").Inc()
		switch c.kind {
		case opDel:
			delete(s.removing, c.key)
			delete(s.applied, c.key)
			b.deleted = append(b.deleted, c.key)
		case opAdd:
			s.setApplied(c.key, b.attempted[c.key].ident)
			if b.cookie[b.attempted[c.key].service] {
				s.cookiePending = true
			}
		}
	case replyBusy:
		// A removed server with connections stays in maint until they end
		// or the grace runs out: not an error.
		s.m.RuntimeOps.WithLabelValues(op, "pending").Inc()
		s.log.Debug("removed server still has connections; retrying", "server", c.key.String())
	default:
		s.m.RuntimeOps.WithLabelValues(op, "error").Inc()
		if _, seen := b.failed[c.key]; !seen { // the first refusal is the reason
			b.failed[c.key] = failure{refusalKind(c.kind), c, reply}
		}
		return false
	}
	return true
}

// refusalKind is the quarantine of a server HAProxy refused a command of
// kind k for.
func refusalKind(k opKind) quarantineKind {
	switch k {
	case opAdd:
		return qRejected
	case opDel, opShutdown:
		return qStuck
	}
	return qRefused
}
