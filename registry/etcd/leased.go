package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// leasedKey keeps one key bound to the client's lease for as long as its
// context: re-put at once under a new lease after the old one is lost, after
// somebody deletes it by hand, and after somebody rewrites it (other data,
// or not under our lease).
//
// When its context ends the keeper deletes the key, and keeps trying until
// etcd confirms it: a lease outlives an outage of the cluster, so a key that
// could not be deleted while etcd was out of reach would otherwise stay
// registered after it returns.
type leasedKey struct {
	c       *Client
	key     string
	ctx     context.Context
	cancel  context.CancelFunc
	kick    chan struct{}
	firstOK chan struct{}
	written chan struct{} // closed and replaced after every put of the keeper; under mu
	done    chan struct{} // closed once the removal is confirmed (or the client closed)
	repairs *backoff.Pacer
	watches atomic.Int64 // watches started, for tests

	mu        sync.Mutex
	data      []byte
	putUnder  clientv3.LeaseID // lease of the last successful put; 0 forces a put
	rev       int64            // revision of our last write: older events are ours or stale
	removeErr error            // the last removal attempt's error; nil once done
}

// readBackEvery is how often a keeper reads its key back, to catch a change
// a missed watch event did not report: one read per key per interval.
var readBackEvery atomic.Int64

func init() { readBackEvery.Store(int64(30 * time.Second)) }

// ignoreWatch makes keepers act as if every watch event were lost: tests of
// the read-back set it.
var ignoreWatch atomic.Bool

func (c *Client) startLeased(ctx context.Context, key string, data []byte) *leasedKey {
	k := &leasedKey{c: c, key: key, data: data,
		kick: make(chan struct{}, 1), firstOK: make(chan struct{}), done: make(chan struct{}),
		written: make(chan struct{}),
		repairs: backoff.NewPacer(100*time.Millisecond, 5*time.Second, 5*time.Second)}
	k.ctx, k.cancel = context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, k.cancel)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer stop()
		k.run()
	}()
	return k
}

func (k *leasedKey) waitFirst(ctx context.Context) error {
	ctx, cancel := k.c.opContext(ctx)
	defer cancel()
	select {
	case <-k.firstOK:
		return nil
	case <-ctx.Done():
		k.cancel()
		if k.c.ctx.Err() != nil {
			return registry.ErrClosed
		}
		return fmt.Errorf("etcd: put %s: %w", k.key, k.c.explain(ctx.Err()))
	}
}

func (k *leasedKey) kickNow() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// watch follows every change of the key: deletes and puts by anybody.
func (k *leasedKey) watch(cli *clientv3.Client) clientv3.WatchChan {
	k.watches.Add(1)
	return cli.Watch(clientv3.WithRequireLeader(k.ctx), k.key, clientv3.WithCreatedNotify())
}

func (k *leasedKey) run() {
	defer close(k.done)
	cli, err := k.c.conn(k.ctx)
	if err != nil {
		return // ended before etcd was ever reached: nothing was put
	}
	defer k.removeUntilConfirmed(cli)
	events := k.watch(cli)
	var rewatch <-chan time.Time // set while the watch is down
	watchRetries := backoff.New(100*time.Millisecond, 5*time.Second)
	// An unanswered put already waits OpTimeout for etcd: the pause
	// between attempts stays short, so a key lands within about a second
	// of etcd answering again.
	putRetries := backoff.New(100*time.Millisecond, time.Second)
	readBack := time.NewTicker(time.Duration(readBackEvery.Load()))
	defer readBack.Stop()
	first, everPut, rewatched := true, false, false
	var retry <-chan time.Time // set while a failed put waits for its retry
	for k.ctx.Err() == nil {
		lease, changed := k.c.currentLease()
		k.mu.Lock()
		need := lease != 0 && k.putUnder != lease && retry == nil
		data := k.data
		k.mu.Unlock()
		if need && everPut {
			if d := k.repairs.Hold(time.Now()); d > 0 {
				retry, need = time.After(d), false
			}
		}
		if need {
			ctx, cancel := context.WithTimeout(k.ctx, k.c.cfg.OpTimeout)
			resp, err := cli.Put(ctx, k.key, string(data), clientv3.WithLease(lease))
			cancel()
			k.c.count("writes", "put", err)
			if err != nil {
				if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
					k.c.checkLease() // etcd says the lease is gone: a new one now, not at the next renewal
				}
				d := putRetries.Next()
				if k.ctx.Err() == nil {
					k.c.log.Info("leased put failed; retrying", "key", k.key, "err", err, "in", d)
				}
				retry = time.After(d)
			} else {
				putRetries.Reset()
				k.mu.Lock()
				if string(k.data) == string(data) {
					k.putUnder = lease
				}
				k.rev = max(k.rev, resp.Header.Revision)
				close(k.written)
				k.written = make(chan struct{})
				k.mu.Unlock()
				if everPut {
					k.c.m.Reregistrations.WithLabelValues(backendName).Inc()
					k.c.log.Info("leased key re-put", "key", k.key, "lease", fmt.Sprintf("%x", int64(lease)))
				}
				everPut = true
				if first {
					close(k.firstOK)
					first = false
				}
				continue // the data may have changed meanwhile
			}
		}
		select {
		case <-k.ctx.Done():
		case <-changed:
			// A new lease (or the old one back) is news: put at once
			// rather than wait out a backoff grown while etcd was away.
			retry = nil
			putRetries.Reset()
		case <-retry:
			retry = nil
		case <-k.kick:
		case <-rewatch:
			rewatch, rewatched = nil, true
			events = k.watch(cli)
		case resp, ok := <-events:
			if !ok {
				// The watch ended (no leader, say): watch again after a
				// jittered backoff, so a cluster without a leader is not
				// asked in a tight loop. A lease change re-puts anyway.
				events, rewatch = nil, watchRetries.After()
				continue
			}
			if resp.Created {
				watchRetries.Reset()
				if rewatched {
					// Changes while no watch ran are lost: read back.
					k.readBack(cli)
				}
			}
			for _, ev := range resp.Events {
				if !ignoreWatch.Load() {
					k.observe(ev)
				}
			}
		case <-readBack.C:
			k.readBack(cli)
		}
	}
}

// observe looks at one event of the key: a delete, or a put that is not
// ours (other data, or not under the lease in force), makes the keeper put
// it back.
func (k *leasedKey) observe(ev *clientv3.Event) {
	lease, _ := k.c.leaseNow()
	k.mu.Lock()
	defer k.mu.Unlock()
	if ev.Kv.ModRevision <= k.rev {
		return // our own write, or older than it
	}
	if ev.Type == clientv3.EventTypePut && string(ev.Kv.Value) == string(k.data) &&
		lease != 0 && clientv3.LeaseID(ev.Kv.Lease) == lease {
		// Ours after all (a put whose answer was lost), or identical.
		k.putUnder, k.rev = lease, ev.Kv.ModRevision
		return
	}
	if k.putUnder != 0 {
		k.c.log.Info("leased key changed by another writer; putting it back", "key", k.key, "event", ev.Type.String())
	}
	k.putUnder = 0
	k.rev = ev.Kv.ModRevision
}

// readBack reads the key once and makes the keeper put it back when it is
// missing or not what was put; an unanswered read says nothing.
func (k *leasedKey) readBack(cli *clientv3.Client) {
	k.mu.Lock()
	putUnder := k.putUnder
	k.mu.Unlock()
	if putUnder == 0 {
		return // a put is due anyway
	}
	ctx, cancel := context.WithTimeout(k.ctx, k.c.cfg.OpTimeout)
	resp, err := cli.Get(ctx, k.key)
	cancel()
	k.c.count("reads", "get", err)
	if err != nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.putUnder != putUnder {
		return // changed meanwhile: the loop knows
	}
	if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == string(k.data) && clientv3.LeaseID(resp.Kvs[0].Lease) == putUnder {
		return
	}
	k.c.log.Info("read-back: leased key missing or changed; putting it back", "key", k.key)
	k.putUnder = 0
	k.kickNow()
}

// removeUntilConfirmed deletes the key and retries until etcd confirms it.
// Only Close ends it earlier, after one bounded attempt: Close revokes the
// lease, which takes the key with it.
func (k *leasedKey) removeUntilConfirmed(cli *clientv3.Client) {
	// As for puts: an attempt waits OpTimeout for etcd, the pause between
	// attempts stays short.
	retries := backoff.New(100*time.Millisecond, time.Second)
	for {
		closing := k.c.ctx.Err() != nil
		limit := k.c.cfg.OpTimeout
		if closing {
			limit = min(limit, 3*time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		stop := func() bool { return false }
		if !closing {
			stop = context.AfterFunc(k.c.ctx, cancel) // Close cuts a long attempt short
		}
		_, err := cli.Delete(ctx, k.key)
		stop()
		cancel()
		k.c.count("writes", "delete", err)
		k.mu.Lock()
		k.removeErr = err
		k.mu.Unlock()
		if err == nil {
			return
		}
		if closing || k.c.ctx.Err() != nil {
			k.mu.Lock()
			k.removeErr = fmt.Errorf("%w (removal of %s not confirmed: %v)", registry.ErrClosed, k.key, err)
			k.mu.Unlock()
			return
		}
		d := retries.Next()
		k.c.log.Info("leased key removal failed; retrying", "key", k.key, "err", err, "in", d)
		select {
		case <-k.c.ctx.Done():
		case <-time.After(d):
		}
	}
}

// update writes new data under the lease of the last put, or, when there
// is none (the key is being put back), waits for the keeper to put it.
func (k *leasedKey) update(ctx context.Context, data []byte) error {
	if k.ctx.Err() != nil {
		return fmt.Errorf("etcd: update %s: deregistered", k.key)
	}
	ctx, cancel := k.c.opContext(ctx)
	defer cancel()
	k.mu.Lock()
	k.data = data
	lease := k.putUnder
	k.mu.Unlock()
	if lease != 0 {
		resp, err := k.c.cli.Put(ctx, k.key, string(data), clientv3.WithLease(lease)) // putUnder != 0: connected
		k.c.count("writes", "put", err)
		if err == nil {
			k.mu.Lock()
			k.rev = max(k.rev, resp.Header.Revision)
			k.mu.Unlock()
			return nil
		}
		if errors.Is(rpctypes.Error(err), rpctypes.ErrLeaseNotFound) {
			k.c.checkLease()
		}
		// The keeper will write it under whatever lease holds next.
		k.mu.Lock()
		k.putUnder = 0
		k.mu.Unlock()
		k.kickNow()
		return fmt.Errorf("etcd: update %s: %w", k.key, err)
	}
	k.kickNow()
	for {
		k.mu.Lock()
		done := k.putUnder != 0 && string(k.data) == string(data)
		written := k.written
		k.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-written:
		case <-ctx.Done():
			return fmt.Errorf("etcd: update %s: not written yet, the keeper retries: %w", k.key, k.c.explain(ctx.Err()))
		}
	}
}

// The registry.Keeper of a leased key.

func (k *leasedKey) Key() string                                  { return k.key }
func (k *leasedKey) Write(ctx context.Context, data []byte) error { return k.update(ctx, data) }
func (k *leasedKey) Stop()                                        { k.cancel() }
func (k *leasedKey) Stopped() <-chan struct{}                     { return k.done }
func (k *leasedKey) RemoveErr() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.removeErr
}

// Register implements registry.Backend. The key is
// <dir>/<name>_<host>_<port>: unique per instance, so two nerves that share
// an instance_id under one path cannot overwrite (or delete) each other.
func (c *Client) Register(ctx context.Context, dir string, inst registry.Instance) (registry.Registration, error) {
	if err := validatePrefix(dir); err != nil {
		return nil, fmt.Errorf("etcd: register: path %w", err)
	}
	data, err := inst.Encode()
	if err != nil {
		return nil, fmt.Errorf("etcd: register: %w", err)
	}
	if c.ctx.Err() != nil {
		return nil, registry.ErrClosed
	}
	name := inst.Name
	if name == "" {
		name = "instance"
	}
	key := fmt.Sprintf("%s/%s_%s_%d", dir, name, strings.Trim(inst.Host, "[]"), inst.Port)
	k := c.startLeased(ctx, key, data)
	if err := k.waitFirst(ctx); err != nil {
		return nil, err
	}
	return registry.Kept{Backend: backendName, Keeper: k}, nil
}
