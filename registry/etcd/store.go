package etcd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/registry"
)

// The fleet-wide records (overrides, acks, catalogs, history) are
// registry.Records over the client's store (store.go), under Root:
//
//	Root/overrides/<key>          on no lease; the revision is the store revision of the put
//	Root/overrides-deleted        the time of the latest removal of an override
//	Root/acks/<synapse id>        on the lease, put again under a new one after it is lost
//	Root/catalog/<synapse id>     on no lease
//	Root/history/<unix ns>        on no lease, 20 digits; the oldest beyond registry.MaxHistory go

// store is the client's registry.Store: a directory is the key prefix
// dir + "/", a record the key dir/name. Ephemeral records are on the
// client's lease (leased.go). The roles of roles.go grant each identity
// exactly the prefixes it writes.
type store struct{ c *Client }

var _ registry.Store = store{}

// deletedMarker is the key Delete puts with every removal from dir: a
// deletion leaves no revision on any key under dir, so List reads the
// marker's to tell the revision of the latest change (Root/overrides-deleted
// for the overrides).
func deletedMarker(dir string) string { return dir + "-deleted" }

// begin starts a write of the record name: it checks the name and waits
// for the connection, within the client's op timeout (the returned context).
func (s store) begin(ctx context.Context, name string) (context.Context, context.CancelFunc, *clientv3.Client, error) {
	ctx, cancel := s.c.opContext(ctx)
	if err := registry.ValidateRecordName(name); err != nil {
		return ctx, cancel, nil, err
	}
	cli, err := s.c.conn(ctx)
	return ctx, cancel, cli, err
}

// Put writes dir/name on no lease; the revision is the store revision of
// the put.
func (s store) Put(ctx context.Context, dir, name string, data []byte) (int64, error) {
	c := s.c
	key := dir + "/" + name
	ctx, cancel, cli, err := s.begin(ctx, name)
	defer cancel()
	if err != nil {
		return 0, fmt.Errorf("etcd: put %s: %w", key, err)
	}
	resp, err := cli.Put(ctx, key, string(data))
	c.count("writes", "put", err)
	if err != nil {
		return 0, fmt.Errorf("etcd: put %s: %w", key, c.explain(err))
	}
	return resp.Header.Revision, nil
}

// Revision is dir/name's mod revision, from a range request for the key
// alone (WithKeysOnly: no value read).
func (s store) Revision(ctx context.Context, dir, name string) (int64, bool, error) {
	c := s.c
	key := dir + "/" + name
	ctx, cancel, cli, err := s.begin(ctx, name)
	defer cancel()
	if err != nil {
		return 0, false, fmt.Errorf("etcd: read %s: %w", key, err)
	}
	resp, err := cli.Get(ctx, key, clientv3.WithKeysOnly())
	c.count("reads", "range", err)
	if err != nil {
		return 0, false, fmt.Errorf("etcd: read %s: %w", key, c.explain(err))
	}
	if len(resp.Kvs) == 0 {
		return 0, false, nil
	}
	return resp.Kvs[0].ModRevision, true, nil
}

// Delete removes dir/name and puts dir's deletion marker (the time, for a
// reader) in the same transaction; the revision is the transaction's.
func (s store) Delete(ctx context.Context, dir, name string) (int64, error) {
	c := s.c
	key := dir + "/" + name
	ctx, cancel, cli, err := s.begin(ctx, name)
	defer cancel()
	if err != nil {
		return 0, fmt.Errorf("etcd: delete %s: %w", key, err)
	}
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpDelete(key),
		clientv3.OpPut(deletedMarker(dir), time.Now().UTC().Format(time.RFC3339Nano)),
	).Commit()
	c.count("writes", "delete", err)
	if err != nil {
		return 0, fmt.Errorf("etcd: delete %s: %w", key, c.explain(err))
	}
	return resp.Header.Revision, nil
}

// List reads the keys under dir/ in one range request (the newest n by key
// with opts.Newest); with opts.Deletions, a second one reads dir's
// deletion marker. The listing's revision is the largest mod revision of
// them all, not the store's, which every registration moves.
func (s store) List(ctx context.Context, dir string, opts registry.ListOptions) (registry.Listing, error) {
	prefix := dir + "/"
	var kvOpts []clientv3.OpOption
	if opts.Newest > 0 {
		kvOpts = []clientv3.OpOption{clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(opts.Newest))}
	}
	resp, err := s.c.list(ctx, prefix, kvOpts...)
	if err != nil {
		return registry.Listing{}, err
	}
	kvs := resp.Kvs
	if opts.Newest > 0 {
		kvs = slices.Clone(kvs)
		slices.Reverse(kvs)
	}
	var l registry.Listing
	if opts.Deletions {
		marker, err := s.c.list(ctx, deletedMarker(dir))
		if err != nil {
			return registry.Listing{}, err
		}
		for _, kv := range marker.Kvs {
			if string(kv.Key) == deletedMarker(dir) {
				l.Rev = kv.ModRevision
			}
		}
	}
	l.Records = make([]registry.Record, 0, len(kvs))
	for _, kv := range kvs {
		l.Records = append(l.Records, registry.Record{Name: strings.TrimPrefix(string(kv.Key), prefix),
			Data: kv.Value, Rev: kv.ModRevision, Ephemeral: kv.Lease != 0})
		l.Rev = max(l.Rev, kv.ModRevision)
	}
	return l, nil
}

// list reads the keys under prefix.
func (c *Client) list(ctx context.Context, prefix string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	cli, err := c.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd: read %s: %w", prefix, err)
	}
	resp, err := cli.Get(ctx, prefix, append([]clientv3.OpOption{clientv3.WithPrefix()}, opts...)...)
	c.count("reads", "range", err)
	if err != nil {
		return nil, fmt.Errorf("etcd: read %s: %w", prefix, c.explain(err))
	}
	return resp, nil
}

// Append puts dir/<unix ns, 20 digits> on no lease, then deletes the
// oldest keys beyond keep in one range delete.
func (s store) Append(ctx context.Context, dir string, data []byte, keep int) error {
	c := s.c
	prefix := dir + "/"
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	key := fmt.Sprintf("%s%020d", prefix, time.Now().UnixNano())
	cli, err := c.conn(ctx)
	if err != nil {
		return fmt.Errorf("etcd: append to %s: %w", dir, err)
	}
	_, err = cli.Put(ctx, key, string(data))
	c.count("writes", "put", err)
	if err != nil {
		return fmt.Errorf("etcd: append to %s: %w", dir, c.explain(err))
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	c.count("reads", "range", err)
	if err != nil || len(resp.Kvs) <= keep {
		return nil // trimmed by the next append
	}
	last := resp.Kvs[len(resp.Kvs)-keep-1].Key
	_, err = cli.Delete(ctx, prefix, clientv3.WithRange(string(last)+"\x00"))
	c.count("writes", "delete", err)
	return nil
}

// Keep keeps dir/name on the client's lease (leased.go), put again at once
// under a new lease after the old one is lost.
func (s store) Keep(ctx context.Context, dir, name string, data []byte) error {
	if err := registry.ValidateRecordName(name); err != nil {
		return err
	}
	c := s.c
	key := dir + "/" + name
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return registry.ErrClosed
	}
	k, ok := c.acks[key]
	if !ok {
		k = c.startLeased(c.ctx, key, data)
		c.acks[key] = k
	}
	c.mu.Unlock()
	if !ok {
		if err := k.waitFirst(ctx); err != nil {
			c.mu.Lock()
			delete(c.acks, key)
			c.mu.Unlock()
			return err
		}
		return nil
	}
	return k.update(ctx, data)
}

// Watch follows the keys under dir/ (watch.go: the watch events carry the
// values, no read per change). The snapshot's revision is the store
// revision of the change.
func (s store) Watch(ctx context.Context, dir string, decode registry.Decoder, out chan<- registry.Snapshot) error {
	prefix := dir + "/"
	dec := func(key string, val []byte) (any, error) { return decode(strings.TrimPrefix(key, prefix), val) }
	return watchPrefix(ctx, s.c, prefix, dec, nil, func(entries map[string]entry[any], rev int64) (registry.Snapshot, bool) {
		snap := registry.Snapshot{Rev: rev}
		for _, e := range entries {
			if e.ok {
				snap.Values = append(snap.Values, e.val)
			}
		}
		return snap, true
	}, out)
}

// Skip counts a bad record under dir's label and logs its key.
func (s store) Skip(dir, name string, err error) {
	s.c.m.RecordsSkipped.WithLabelValues(backendName, dir).Inc()
	s.c.log.Warn("skipping bad registry record", "key", dir+"/"+name, "err", err)
}
