package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/registry"
)

func (c *Client) overridesPrefix() string { return c.cfg.Root + "/overrides/" }
func (c *Client) acksPrefix() string      { return c.cfg.Root + "/acks/" }

// validateKey refuses a key that would leave the overrides prefix.
func validateKey(key string) error {
	if key == "" || key == "." || key == ".." || strings.ContainsAny(key, "/\x00\n#") {
		return fmt.Errorf("override key %q is not valid", key)
	}
	return nil
}

// PutOverride implements registry.Backend; the revision is the store
// revision of the put.
func (c *Client) PutOverride(ctx context.Context, o registry.Override) (int64, error) {
	data, err := o.Encode()
	if err != nil {
		return 0, err
	}
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	key := c.overridesPrefix() + o.Key()
	cli, err := c.conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("etcd: put override %s: %w", key, err)
	}
	resp, err := cli.Put(ctx, key, string(data))
	c.count("writes", "put", err)
	if err != nil {
		return 0, fmt.Errorf("etcd: put override %s: %w", key, c.explain(err))
	}
	return resp.Header.Revision, nil
}

// DeleteOverride implements registry.Backend.
func (c *Client) DeleteOverride(ctx context.Context, key string) (int64, error) {
	if err := validateKey(key); err != nil {
		return 0, err
	}
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	// A deletion leaves no revision on any override key: a marker outside
	// the overrides prefix records it, so Overrides() can tell the
	// revision of the latest change.
	cli, err := c.conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("etcd: delete override %s: %w", key, err)
	}
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpDelete(c.overridesPrefix()+key),
		clientv3.OpPut(c.deletedMarker(), time.Now().UTC().Format(time.RFC3339Nano)),
	).Commit()
	c.count("writes", "delete", err)
	if err != nil {
		return 0, fmt.Errorf("etcd: delete override %s: %w", key, c.explain(err))
	}
	return resp.Header.Revision, nil
}

func (c *Client) deletedMarker() string { return c.cfg.Root + "/overrides-deleted" }

func (c *Client) skip(prefix, key string, err error) {
	c.m.RecordsSkipped.WithLabelValues(backendName, strings.TrimSuffix(prefix, "/")).Inc()
	c.log.Warn("skipping bad registry record", "key", key, "err", err)
}

func (c *Client) list(ctx context.Context, prefix string) (*clientv3.GetResponse, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	cli, err := c.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd: read %s: %w", prefix, err)
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	c.count("reads", "range", err)
	if err != nil {
		return nil, fmt.Errorf("etcd: read %s: %w", prefix, c.explain(err))
	}
	return resp, nil
}

// Overrides implements registry.Backend. The revision is that of the
// latest override change (a put, or a delete through its marker), not the
// store's, which every registration moves.
func (c *Client) Overrides(ctx context.Context) (registry.OverrideSet, error) {
	resp, err := c.list(ctx, c.overridesPrefix())
	if err != nil {
		return registry.OverrideSet{}, err
	}
	marker, err := c.list(ctx, c.deletedMarker())
	if err != nil {
		return registry.OverrideSet{}, err
	}
	set := registry.OverrideSet{}
	for _, kv := range marker.Kvs {
		if string(kv.Key) == c.deletedMarker() {
			set.Revision = kv.ModRevision
		}
	}
	for _, kv := range resp.Kvs {
		set.Revision = max(set.Revision, kv.ModRevision)
		o, err := registry.DecodeOverride(kv.Value)
		if err != nil {
			c.skip(c.overridesPrefix(), string(kv.Key), err)
			continue
		}
		set.Overrides = append(set.Overrides, o)
	}
	sortOverrides(set.Overrides)
	return set, nil
}

func sortOverrides(s []registry.Override) {
	slices.SortFunc(s, func(a, b registry.Override) int { return strings.Compare(a.Key(), b.Key()) })
}

// WatchOverrides implements registry.Backend.
func (c *Client) WatchOverrides(ctx context.Context, out chan<- registry.OverrideSet) error {
	decode := func(_ string, val []byte) (registry.Override, error) { return registry.DecodeOverride(val) }
	return watchPrefix(ctx, c, c.overridesPrefix(), decode, nil, func(entries map[string]entry[registry.Override], rev int64) (registry.OverrideSet, bool) {
		set := registry.OverrideSet{Revision: rev}
		for _, e := range entries {
			if e.ok {
				set.Overrides = append(set.Overrides, e.val)
			}
		}
		sortOverrides(set.Overrides)
		return set, true
	}, out)
}

// PutAck implements registry.Backend: a key Root/acks/<id> on the lease.
func (c *Client) PutAck(ctx context.Context, a registry.Ack) error {
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	if err := a.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return registry.ErrClosed
	}
	k, ok := c.acks[a.ID]
	if !ok {
		k = c.startLeased(c.ctx, c.acksPrefix()+a.ID, data)
		c.acks[a.ID] = k
	}
	c.mu.Unlock()
	if !ok {
		if err := k.waitFirst(ctx); err != nil {
			c.mu.Lock()
			delete(c.acks, a.ID)
			c.mu.Unlock()
			return err
		}
		return nil
	}
	return k.update(ctx, data)
}

// Acks implements registry.Backend.
func (c *Client) Acks(ctx context.Context) ([]registry.Ack, error) {
	resp, err := c.list(ctx, c.acksPrefix())
	if err != nil {
		return nil, err
	}
	var acks []registry.Ack
	for _, kv := range resp.Kvs {
		a, err := registry.DecodeAck(kv.Value)
		if err == nil {
			err = registry.CheckAckLive(strings.TrimPrefix(string(kv.Key), c.acksPrefix()), a, kv.Lease != 0)
		}
		if err != nil {
			c.skip(c.acksPrefix(), string(kv.Key), err)
			continue
		}
		acks = append(acks, a)
	}
	slices.SortFunc(acks, func(a, b registry.Ack) int { return strings.Compare(a.ID, b.ID) })
	return acks, nil
}
