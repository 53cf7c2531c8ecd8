package etcd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/registry"
)

// leasedKey keeps one key bound to the client's lease for as long as its
// context: re-put at once under a new lease after the old one is lost, and
// after somebody deletes it by hand.
type leasedKey struct {
	c       *Client
	key     string
	ctx     context.Context
	cancel  context.CancelFunc
	kick    chan struct{}
	firstOK chan struct{}
	done    chan struct{}

	mu        sync.Mutex
	data      []byte
	putUnder  clientv3.LeaseID // lease of the last successful put; 0 forces a put
	removeErr error
}

func (c *Client) startLeased(ctx context.Context, key string, data []byte) *leasedKey {
	k := &leasedKey{c: c, key: key, data: data,
		kick: make(chan struct{}, 1), firstOK: make(chan struct{}), done: make(chan struct{})}
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

func (k *leasedKey) run() {
	defer close(k.done)
	cli, err := k.c.conn(k.ctx)
	if err != nil {
		return // ended before etcd was ever reached: nothing was put
	}
	// Deletions by anybody else put the key back.
	deletes := cli.Watch(clientv3.WithRequireLeader(k.ctx), k.key, clientv3.WithFilterPut())
	first := true
	backoff := 100 * time.Millisecond
	var everPut bool
	for {
		lease, changed := k.c.currentLease()
		var retry <-chan time.Time
		k.mu.Lock()
		need := lease != 0 && k.putUnder != lease
		data := k.data
		k.mu.Unlock()
		if need {
			ctx, cancel := context.WithTimeout(k.ctx, k.c.cfg.OpTimeout)
			_, err := cli.Put(ctx, k.key, string(data), clientv3.WithLease(lease))
			cancel()
			k.c.count("writes", "put", err)
			if err != nil {
				if k.ctx.Err() == nil {
					k.c.log.Info("leased put failed; retrying", "key", k.key, "err", err, "in", backoff)
				}
				retry = time.After(backoff)
				backoff = min(2*backoff, 5*time.Second)
			} else {
				backoff = 100 * time.Millisecond
				k.mu.Lock()
				if string(k.data) == string(data) {
					k.putUnder = lease
				}
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
			k.remove()
			return
		case <-changed:
		case <-retry:
		case <-k.kick:
		case resp, ok := <-deletes:
			if !ok {
				// Watch ended (no leader, say): watch again once this
				// pass is done; a lease change re-puts anyway.
				deletes = cli.Watch(clientv3.WithRequireLeader(k.ctx), k.key, clientv3.WithFilterPut())
				retry = time.After(backoff)
				continue
			}
			if len(resp.Events) > 0 {
				k.mu.Lock()
				k.putUnder = 0
				k.mu.Unlock()
			}
		}
	}
}

// remove deletes the key; everPut or not, a delete of a missing key is harmless.
func (k *leasedKey) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := k.c.cli.Delete(ctx, k.key) // run has connected: remove follows it
	k.c.count("writes", "delete", err)
	k.mu.Lock()
	k.removeErr = err
	k.mu.Unlock()
}

func (k *leasedKey) update(ctx context.Context, data []byte) error {
	k.mu.Lock()
	k.data = data
	lease := k.putUnder
	k.mu.Unlock()
	if lease == 0 {
		k.kickNow()
		return nil
	}
	ctx, cancel := k.c.opContext(ctx)
	defer cancel()
	_, err := k.c.cli.Put(ctx, k.key, string(data), clientv3.WithLease(lease)) // putUnder != 0: connected
	k.c.count("writes", "put", err)
	if err != nil {
		// The keeper will write it under whatever lease holds next.
		k.mu.Lock()
		k.putUnder = 0
		k.mu.Unlock()
		k.kickNow()
		return fmt.Errorf("etcd: update %s: %w", k.key, err)
	}
	return nil
}

type registration struct{ k *leasedKey }

func (r registration) Key() string { return r.k.key }

func (r registration) Update(ctx context.Context, inst registry.Instance) error {
	data, err := inst.Encode()
	if err != nil {
		return err
	}
	return r.k.update(ctx, data)
}

func (r registration) Deregister(ctx context.Context) error {
	r.k.cancel()
	select {
	case <-r.k.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.k.mu.Lock()
	defer r.k.mu.Unlock()
	return r.k.removeErr
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
	return registration{k}, nil
}
