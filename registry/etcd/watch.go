package etcd

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

type entry[T any] struct {
	val T
	ok  bool
	seq int64 // the key's create revision: registration order
}

// watchPrefix keeps entries in step with the keys under prefix: a Get at
// revision R, then a watch from R+1 whose events carry the new values (no
// read per change). After compaction or a cancelled watch it lists again.
// A failed read never removes an entry. After every change, build turns the
// entries and the revision into a value for out (false: nothing to send).
//
// Delivery is latest-wins and never blocks the loop: while the consumer is
// busy the loop keeps draining etcd's watch stream (so etcd never parks it
// as a slow watcher, which would delay its events by whole sync rounds), and
// a burst of events becomes one delivery of the final value. One goroutine
// per watch: the caller's.
func watchPrefix[T, V any](ctx context.Context, c *Client, prefix string, decode func(key string, val []byte) (T, error), quiet func(error) bool, build func(map[string]entry[T], int64) (V, bool), out chan<- V) error {
	return newPrefixWatch(ctx, c, prefix, decode, quiet, build, out).run()
}

// prefixWatch is watchPrefix's state. It lives on the heap and the loop is
// split into small methods so that the goroutine, parked in wait between
// events, has a shallow stack: with a watch per service, a stack that the
// runtime can shrink to 4 KB (the frames below a quarter of it) rather than
// 8 KB is 4 MB less per 1000 watches. TestWatchStackStaysSmall keeps it so.
type prefixWatch[T, V any] struct {
	ctx     context.Context
	c       *Client
	prefix  string
	skipped prometheus.Counter
	decode  func(key string, val []byte) (T, error)
	quiet   func(error) bool
	build   func(map[string]entry[T], int64) (V, bool)
	out     chan<- V
	b       *backoff.Backoff

	entries map[string]entry[T] // by key, less the prefix
	deleted int                 // keys deleted from entries since it was made
	rev     int64               // the revision entries reflect; 0: list again
	pending V                   // the value waiting for the consumer
	sendTo  chan<- V            // out while a value waits, else nil
	// watchStart is when the current watch started: one that lasted
	// longWatch is not a fast failure, whatever it delivered.
	watchStart time.Time
}

// longWatch is how long a watch must have lasted for its end to reset the
// backoff.
const longWatch = 10 * time.Second

//go:noinline
func newPrefixWatch[T, V any](ctx context.Context, c *Client, prefix string, decode func(key string, val []byte) (T, error), quiet func(error) bool, build func(map[string]entry[T], int64) (V, bool), out chan<- V) *prefixWatch[T, V] {
	return &prefixWatch[T, V]{
		ctx: ctx, c: c, prefix: prefix, decode: decode, quiet: quiet, build: build, out: out,
		skipped: c.m.RecordsSkipped.WithLabelValues(backendName, strings.TrimSuffix(prefix, "/")),
		b:       backoff.New(100*time.Millisecond, 5*time.Second),
	}
}

// logger is the client's logger with the prefix. Made when something is
// logged (rarely: failures), not kept per watch: 1000 watches each kept
// a copy of the handler with the attribute (0.2 MB).
func (w *prefixWatch[T, V]) logger() *slog.Logger {
	return w.c.log.With("prefix", w.prefix)
}

func (w *prefixWatch[T, V]) put(kv *mvccpb.KeyValue) {
	v, err := w.decode(string(kv.Key), kv.Value)
	if err != nil && (w.quiet == nil || !w.quiet(err)) {
		w.skipped.Inc()
		w.logger().Warn("skipping bad registry record", "key", string(kv.Key), "err", err)
	}
	w.entries[string(w.rel(kv.Key))] = entry[T]{val: v, ok: err == nil, seq: kv.CreateRevision}
}

// rel is key without the watch's prefix, which every key has: entries is
// keyed by it (1000 services × 10 backends: 0.4 MB of prefixes).
func (w *prefixWatch[T, V]) rel(key []byte) []byte {
	if len(key) >= len(w.prefix) && string(key[:len(w.prefix)]) == w.prefix {
		return key[len(w.prefix):]
	}
	return key
}

func (w *prefixWatch[T, V]) offer(rev int64) {
	if v, ok := w.build(w.entries, rev); ok {
		w.pending, w.sendTo = v, w.out
	}
}

func (w *prefixWatch[T, V]) sent() {
	var zero V
	w.pending, w.sendTo = zero, nil
}

// ended is the error that ends the watch once ctx or the client is done
// (nil: neither).
func (w *prefixWatch[T, V]) ended() error {
	if w.ctx.Err() != nil {
		return w.ctx.Err()
	}
	if w.c.ctx.Err() != nil {
		return registry.ErrClosed
	}
	return nil
}

// pause waits d (or until ctx ends), delivering meanwhile.
func (w *prefixWatch[T, V]) pause(d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return w.ctx.Err()
		case <-w.c.ctx.Done():
			return registry.ErrClosed
		case w.sendTo <- w.pending:
			w.sent()
		case <-timer.C:
			return nil
		}
	}
}

func (w *prefixWatch[T, V]) run() error {
	if _, err := w.c.conn(w.ctx); err != nil {
		return err
	}
	w.c.startMonitor()
	for {
		p, err := w.c.pinned(w.ctx)
		if err != nil {
			if err := w.ended(); err != nil {
				return err
			}
			if err := w.noConnection(err); err != nil {
				return err
			}
			continue
		}
		if w.rev == 0 {
			if again, err := w.list(p); err != nil {
				return err
			} else if again {
				continue
			}
		}
		// The loop over the watch's responses is here, not in a method
		// of its own: the parked goroutine's stack is every frame down
		// to wait.
		sw, done := w.startWatch(p)
		moved := false // the watch delivered something: not a fast failure
	watching:
		for {
			switch w.wait(p, sw) {
			case waitSent:
				continue
			case waitPinLeft:
				w.pinLeft(p)
				break watching
			case waitClosed:
				break watching
			}
			if !w.apply(sw) {
				break
			}
			moved = true
		}
		done()
		if err := w.watchEnded(p, moved); err != nil {
			return err
		}
	}
}

// noConnection waits before the next try to pin a member.
//
//go:noinline
func (w *prefixWatch[T, V]) noConnection(err error) error {
	w.logger().Debug("no connection to watch on yet", "err", err)
	return w.pause(w.b.Next())
}

//go:noinline
func (w *prefixWatch[T, V]) pinLeft(p *pin) {
	w.logger().Debug("watch moves to another member", "from", p.endpoint, "revision", w.rev)
}

// list reads the prefix at its current revision. again: list (or pin)
// again, after the pause if any.
func (w *prefixWatch[T, V]) list(p *pin) (again bool, err error) {
	gctx, cancel := context.WithTimeout(w.ctx, w.c.cfg.OpTimeout)
	stop := context.AfterFunc(p.ctx, cancel) // the pin left: list on the next
	resp, err := p.cli.Get(gctx, w.prefix, clientv3.WithPrefix())
	stop()
	cancel()
	w.c.count("reads", "range", err)
	if err != nil {
		if w.ctx.Err() != nil {
			return false, w.ctx.Err()
		}
		if p.ctx.Err() != nil && w.c.ctx.Err() == nil {
			w.logger().Debug("list moves to another member", "from", p.endpoint)
			return true, nil
		}
		d := w.b.Next()
		w.logger().Debug("list failed; keeping the last set", "err", err, "in", d)
		return true, w.pause(d)
	}
	w.entries, w.deleted = make(map[string]entry[T], len(resp.Kvs)), 0
	for _, kv := range resp.Kvs {
		w.put(kv)
	}
	w.rev = resp.Header.Revision
	w.offer(w.rev)
	return false, nil
}

// startWatch watches from the next revision, on the pin's watch stream:
// when its member stalls the pin is abandoned, the watch ends, and it
// resumes from rev on the next pin without listing again. done ends the
// watch.
func (w *prefixWatch[T, V]) startWatch(p *pin) (sw *streamWatch, done func()) {
	w.watchStart = time.Now()
	sw = w.c.watches(p).add(watchRequest(w.prefix, w.rev+1))
	return sw, sw.stop
}

// watchEnded decides what follows a watch that ended: nil, pin (or list)
// again, at once or after a pause.
func (w *prefixWatch[T, V]) watchEnded(p *pin, moved bool) error {
	if err := w.ended(); err != nil {
		return err
	}
	select {
	case <-p.ctx.Done():
		w.b.Reset() // a new member: resume at once
		return nil
	default:
	}
	if moved || time.Since(w.watchStart) >= longWatch {
		// It delivered something, or it lasted: not a fast failure
		// (a quiet watch ended by a leader election must not pay the
		// backoff that the elections before it built up).
		w.b.Reset()
	}
	// Do not spin when the cluster has no leader.
	return w.pause(w.b.Next())
}

type waitResult uint8

const (
	waitResponse waitResult = iota // the watch has something queued
	waitSent                       // the pending value was delivered
	waitPinLeft
	waitClosed // the watch's context ended
)

// wait is where the goroutine spends its life: keep its frame small (see
// prefixWatch).
func (w *prefixWatch[T, V]) wait(p *pin, sw *streamWatch) waitResult {
	select {
	case w.sendTo <- w.pending:
		w.sent()
		return waitSent
	case <-p.ctx.Done():
		return waitPinLeft
	case <-w.ctx.Done():
		return waitClosed
	case <-sw.ready:
		return waitResponse
	}
}

// compact copies entries into a map of its size once as many keys were
// deleted as it holds. A Go map never shrinks: a service whose backends
// were all replaced (the new ones registered before the old ones left)
// would keep a map of twice its size for good (1000 services: 2 MB).
func (w *prefixWatch[T, V]) compact() {
	if w.deleted == 0 || w.deleted < len(w.entries) {
		return
	}
	m := make(map[string]entry[T], len(w.entries))
	for k, e := range w.entries {
		m[k] = e
	}
	w.entries, w.deleted = m, 0
}

// apply takes what the watch has queued; false: the watch ended. The
// entries are offered once for all of it: a burst that queued while the
// goroutine was busy becomes one value.
func (w *prefixWatch[T, V]) apply(sw *streamWatch) bool {
	resps, ended, err := sw.take()
	var changedAt int64 // the revision of the last change applied; 0: none
	defer func() {
		if changedAt != 0 {
			w.offer(changedAt)
		}
	}()
	for _, resp := range resps {
		more, changed := w.applyOne(resp)
		if changed {
			changedAt = max(resp.GetHeader().GetRevision(), w.rev) // the event's, if it came without a header
		}
		if !more {
			return false
		}
	}
	if ended {
		w.logger().Debug("watch ended; resuming", "err", err, "revision", w.rev)
		return false
	}
	return true
}

// applyOne applies one response. more: the watch goes on; changed: the
// entries changed.
func (w *prefixWatch[T, V]) applyOne(resp *pb.WatchResponse) (more, changed bool) {
	if resp.CompactRevision != 0 {
		w.logger().Info("watch revision compacted; listing again", "compact_revision", resp.CompactRevision)
		w.rev = 0
		return false, false
	}
	if resp.Canceled {
		w.logger().Debug("watch cancelled; resuming", "reason", resp.CancelReason, "revision", w.rev)
		return false, false
	}
	if len(resp.Events) == 0 {
		if rev := resp.GetHeader().GetRevision(); !resp.Created && rev != 0 {
			// A progress notification: nothing changed up to there.
			w.rev = max(w.rev, rev)
			w.c.progressSeen.Add(1)
		}
		return true, false
	}
	for _, ev := range resp.Events {
		switch ev.Type {
		case mvccpb.PUT:
			w.put(ev.Kv)
		case mvccpb.DELETE:
			delete(w.entries, string(w.rel(ev.Kv.Key)))
			w.deleted++
		}
	}
	w.compact()
	w.rev = max(w.rev, resp.Events[len(resp.Events)-1].Kv.ModRevision)
	return true, true
}

// Watch implements registry.Backend: the valid instances under dir/.
func (c *Client) Watch(ctx context.Context, dir string, opts registry.DecodeOptions, out chan<- []registry.Instance) error {
	if err := validatePrefix(dir); err != nil {
		return err
	}
	// Set up in a function of its own: this frame stays on the watch
	// goroutine's stack for its life (see prefixWatch).
	return c.instanceWatch(ctx, dir, opts, out).run()
}

//go:noinline
func (c *Client) instanceWatch(ctx context.Context, dir string, opts registry.DecodeOptions, out chan<- []registry.Instance) *prefixWatch[registry.Instance, []registry.Instance] {
	updates := c.m.WatchUpdates.WithLabelValues(backendName, dir)
	var last []registry.Instance
	first := true
	decode := func(_ string, val []byte) (registry.Instance, error) { return registry.Decode(val, opts) }
	quiet := func(err error) bool { return errors.Is(err, registry.ErrNotAlive) }
	return newPrefixWatch(ctx, c, dir+"/", decode, quiet, func(entries map[string]entry[registry.Instance], _ int64) ([]registry.Instance, bool) {
		set := registry.SetOf(entries, func(e entry[registry.Instance]) (registry.Instance, bool) {
			inst := e.val
			inst.Seq = e.seq
			return inst, e.ok
		})
		if !first && registry.EqualSets(set, last) {
			return nil, false
		}
		first, last = false, set
		updates.Inc()
		return set, true
	}, out)
}
