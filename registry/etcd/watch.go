package etcd

import (
	"context"
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
	log := c.log.With("prefix", prefix)
	skipped := c.m.RecordsSkipped.WithLabelValues(backendName, strings.TrimSuffix(prefix, "/"))
	put := func(entries map[string]entry[T], kv *mvccpb.KeyValue) {
		v, err := decode(string(kv.Key), kv.Value)
		if err != nil && (quiet == nil || !quiet(err)) {
			skipped.Inc()
			log.Warn("skipping bad registry record", "key", string(kv.Key), "err", err)
		}
		entries[string(kv.Key)] = entry[T]{val: v, ok: err == nil, seq: kv.CreateRevision}
	}
	var pending V
	var sendTo chan<- V // out while a value waits, else nil
	offer := func(entries map[string]entry[T], rev int64) {
		if v, ok := build(entries, rev); ok {
			pending, sendTo = v, out
		}
	}
	sent := func() {
		var zero V
		pending, sendTo = zero, nil
	}
	// pause waits d (or until ctx ends), delivering meanwhile.
	pause := func(d time.Duration) error {
		timer := time.NewTimer(d)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.ctx.Done():
				return registry.ErrClosed
			case sendTo <- pending:
				sent()
			case <-timer.C:
				return nil
			}
		}
	}
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	var entries map[string]entry[T]
	if _, err := c.conn(ctx); err != nil {
		return err
	}
	c.startMonitor()
	// rev is the revision entries reflect; 0: list again.
	var rev int64
	for {
		p, err := c.pinned(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if c.ctx.Err() != nil {
				return registry.ErrClosed
			}
			log.Debug("no connection to watch on yet", "err", err)
			if err := pause(b.Next()); err != nil {
				return err
			}
			continue
		}
		if rev == 0 {
			// List.
			gctx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
			stop := context.AfterFunc(p.ctx, cancel) // the pin left: list on the next
			resp, err := p.cli.Get(gctx, prefix, clientv3.WithPrefix())
			stop()
			cancel()
			c.count("reads", "range", err)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if p.ctx.Err() != nil && c.ctx.Err() == nil {
					log.Debug("list moves to another member", "from", p.endpoint)
					continue
				}
				d := b.Next()
				log.Debug("list failed; keeping the last set", "err", err, "in", d)
				if err := pause(d); err != nil {
					return err
				}
				continue
			}
			entries = make(map[string]entry[T], len(resp.Kvs))
			for _, kv := range resp.Kvs {
				put(entries, kv)
			}
			rev = resp.Header.Revision
			offer(entries, rev)
		}

		// Watch from the next revision, on the pin: when its member stalls
		// the pin is abandoned, the watch ends, and it resumes from rev on
		// the next pin without listing again.
		wctx, wcancel := context.WithCancel(c.watchContext(ctx))
		stop := context.AfterFunc(c.ctx, wcancel)
		wch := p.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		moved := false // the watch delivered something: not a fast failure
	watching:
		for {
			var wresp clientv3.WatchResponse
			var ok bool
			select {
			case sendTo <- pending:
				sent()
				continue
			case <-p.ctx.Done():
				log.Debug("watch moves to another member", "from", p.endpoint, "revision", rev)
				break watching
			case wresp, ok = <-wch:
			}
			if !ok {
				break
			}
			if err := wresp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) || wresp.CompactRevision != 0 {
					log.Info("watch revision compacted; listing again", "compact_revision", wresp.CompactRevision)
					rev = 0
				} else {
					log.Debug("watch ended; resuming", "err", err, "revision", rev)
				}
				break watching
			}
			moved = true
			if wresp.IsProgressNotify() {
				rev = max(rev, wresp.Header.Revision)
				continue
			}
			if len(wresp.Events) == 0 {
				continue
			}
			for _, ev := range wresp.Events {
				switch ev.Type {
				case clientv3.EventTypePut:
					put(entries, ev.Kv)
				case clientv3.EventTypeDelete:
					delete(entries, string(ev.Kv.Key))
				}
			}
			rev = max(rev, wresp.Events[len(wresp.Events)-1].Kv.ModRevision)
			offer(entries, wresp.Header.Revision)
		}
		wcancel()
		stop()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.ctx.Err() != nil {
			return registry.ErrClosed
		}
		select {
		case <-p.ctx.Done():
			b.Reset() // a new member: resume at once
			continue
		default:
		}
		if moved {
			b.Reset()
		}
		// Do not spin when the cluster has no leader.
		if err := pause(b.Next()); err != nil {
			return err
		}
	}
}

// Watch implements registry.Backend: the valid instances under dir/.
func (c *Client) Watch(ctx context.Context, dir string, opts registry.DecodeOptions, out chan<- []registry.Instance) error {
	if err := validatePrefix(dir); err != nil {
		return err
	}
	updates := c.m.WatchUpdates.WithLabelValues(backendName, dir)
	var last []registry.Instance
	first := true
	decode := func(_ string, val []byte) (registry.Instance, error) { return registry.Decode(val, opts) }
	quiet := func(err error) bool { return errors.Is(err, registry.ErrNotAlive) }
	return watchPrefix(ctx, c, dir+"/", decode, quiet, func(entries map[string]entry[registry.Instance], _ int64) ([]registry.Instance, bool) {
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
