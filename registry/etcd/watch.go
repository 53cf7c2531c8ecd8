package etcd

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/registry"
)

type entry[T any] struct {
	val T
	ok  bool
}

// watchPrefix keeps entries in step with the keys under prefix: a Get at
// revision R, then a watch from R+1 whose events carry the new values (no
// read per change). After compaction or a cancelled watch it lists again.
// A failed read never removes an entry. emit gets the entries and the
// revision after every change; it returns false to stop.
func watchPrefix[T any](ctx context.Context, c *Client, prefix string, decode func(key string, val []byte) (T, error), quiet func(error) bool, emit func(map[string]entry[T], int64) bool) error {
	log := c.log.With("prefix", prefix)
	skipped := c.m.RecordsSkipped.WithLabelValues(backendName, strings.TrimSuffix(prefix, "/"))
	put := func(entries map[string]entry[T], kv *mvccpb.KeyValue) {
		v, err := decode(string(kv.Key), kv.Value)
		if err != nil && (quiet == nil || !quiet(err)) {
			skipped.Inc()
			log.Warn("skipping bad registry record", "key", string(kv.Key), "err", err)
		}
		entries[string(kv.Key)] = entry[T]{val: v, ok: err == nil}
	}
	backoff := 100 * time.Millisecond
	var entries map[string]entry[T]
	cli, err := c.conn(ctx)
	if err != nil {
		return err
	}
	for {
		// List.
		gctx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
		resp, err := cli.Get(gctx, prefix, clientv3.WithPrefix())
		cancel()
		c.count("reads", "range", err)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Debug("list failed; keeping the last set", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-c.ctx.Done():
				return registry.ErrClosed
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		entries = make(map[string]entry[T], len(resp.Kvs))
		for _, kv := range resp.Kvs {
			put(entries, kv)
		}
		rev := resp.Header.Revision
		if !emit(entries, rev) {
			return ctx.Err()
		}

		// Watch from the next revision.
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		stop := context.AfterFunc(c.ctx, wcancel)
		wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wresp := range wch {
			if err := wresp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) || wresp.CompactRevision != 0 {
					log.Info("watch revision compacted; listing again", "compact_revision", wresp.CompactRevision)
				} else {
					log.Debug("watch ended; listing again", "err", err)
				}
				break
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
			if !emit(entries, wresp.Header.Revision) {
				break
			}
		}
		wcancel()
		stop()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if c.ctx.Err() != nil {
			return registry.ErrClosed
		}
		// Do not spin when the cluster has no leader.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
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
	ctx, cancel := context.WithCancel(ctx)
	box := newMailbox(ctx, out)
	defer box.wait()
	defer cancel()
	return watchPrefix(ctx, c, dir+"/", decode, quiet, func(entries map[string]entry[registry.Instance], _ int64) bool {
		keys := make([]string, 0, len(entries))
		for k, e := range entries {
			if e.ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		set := make([]registry.Instance, len(keys))
		for i, k := range keys {
			set[i] = entries[k].val
		}
		set = registry.Dedupe(set)
		if !first && registry.EqualSets(set, last) {
			return true
		}
		first, last = false, set
		updates.Inc()
		box.put(set)
		return ctx.Err() == nil
	})
}
