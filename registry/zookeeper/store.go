package zookeeper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

// The fleet-wide records (overrides, acks, catalogs, history) are
// registry.Records over the client's store (store.go), under Root:
//
//	Root/overrides/<key>       persistent; the revision is the zxid of the write
//	Root/acks/<synapse id>     ephemeral, re-created after a session expires
//	Root/catalog/<synapse id>  persistent
//	Root/history/entry-<seq>   persistent sequential; the oldest beyond registry.MaxHistory go

// store is the client's registry.Store: a directory is a persistent node,
// a record a child node of it. Every node it creates gets the client's ACL
// (auth.go), so SetupLayout's owners keep applying.
type store struct{ c *Client }

var _ registry.Store = store{}

// begin starts a write of the record name: it checks the name and waits
// for a session, within the client's op timeout (the returned context).
func (s store) begin(ctx context.Context, name string) (context.Context, context.CancelFunc, error) {
	ctx, cancel := s.c.opContext(ctx)
	if err := registry.ValidateRecordName(name); err != nil {
		return ctx, cancel, err
	}
	_, err := s.c.waitSession(ctx)
	return ctx, cancel, err
}

// Put writes dir/name: set, or create when missing (and dir with it). The
// revision is the node's mzxid after the write.
func (s store) Put(ctx context.Context, dir, name string, data []byte) (int64, error) {
	c := s.c
	p := dir + "/" + name
	ctx, cancel, err := s.begin(ctx, name)
	defer cancel()
	if err != nil {
		return 0, err
	}
	var rev int64
	err = call(ctx, func() error {
		for range 5 {
			stat, err := c.conn.Set(p, data, -1)
			c.countWrite("set", err)
			if err == nil {
				rev = stat.Mzxid
				return nil
			}
			if !errors.Is(err, zk.ErrNoNode) {
				return err
			}
			if err := c.ensurePath(dir); err != nil {
				return err
			}
			_, err = c.conn.Create(p, data, 0, c.acl())
			c.countWrite("create", err)
			if errors.Is(err, zk.ErrNodeExists) {
				continue // created by another writer meanwhile: overwrite it
			}
			if err != nil {
				return err
			}
			// A create answers no stat: read it back. Another writer may
			// have changed the node since (a revision that is not ours,
			// which a caller comparing revisions would take for its own
			// write): then set it again.
			got, stat, err := c.conn.Get(p)
			c.countRead("get", err)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return err
			}
			if stat.Version != 0 || !bytes.Equal(got, data) {
				continue
			}
			rev = stat.Mzxid
			return nil
		}
		return errors.New("node keeps changing under us")
	})
	if err != nil {
		return 0, fmt.Errorf("zookeeper: put %s: %w", p, c.denied(p, err))
	}
	return rev, nil
}

// Revision is dir/name's mzxid, from an exists (no data read).
func (s store) Revision(ctx context.Context, dir, name string) (int64, bool, error) {
	c := s.c
	p := dir + "/" + name
	ctx, cancel, err := s.begin(ctx, name)
	defer cancel()
	if err != nil {
		return 0, false, err
	}
	var rev int64
	var ok bool
	err = call(ctx, func() error {
		found, stat, err := c.conn.Exists(p)
		c.countRead("exists", err)
		if err != nil {
			return err
		}
		if ok = found; found {
			rev = stat.Mzxid
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("zookeeper: exists %s: %w", p, c.denied(p, err))
	}
	return rev, ok, nil
}

// Delete removes dir/name. The revision is dir's pzxid after the removal:
// the zxid of the latest change to its children.
func (s store) Delete(ctx context.Context, dir, name string) (int64, error) {
	c := s.c
	p := dir + "/" + name
	ctx, cancel, err := s.begin(ctx, name)
	defer cancel()
	if err != nil {
		return 0, err
	}
	var rev int64
	err = call(ctx, func() error {
		err := c.conn.Delete(p, -1)
		c.countWrite("delete", err)
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
		_, stat, err := c.conn.Exists(dir)
		c.countRead("exists", err)
		if err != nil {
			return err
		}
		if stat != nil {
			rev = stat.Pzxid
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("zookeeper: delete %s: %w", p, c.denied(p, err))
	}
	return rev, nil
}

// List lists dir and reads each child once. The listing's revision is the
// largest of dir's pzxid (which covers removals, so Deletions costs
// nothing) and the children's mzxids.
func (s store) List(ctx context.Context, dir string, opts registry.ListOptions) (registry.Listing, error) {
	c := s.c
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return registry.Listing{}, err
	}
	var l registry.Listing
	err := call(ctx, func() error {
		names, stat, err := c.conn.Children(dir)
		c.countRead("children", err)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return err
		}
		rev := stat.Pzxid
		sort.Strings(names)
		if opts.Newest > 0 && len(names) > opts.Newest {
			names = names[len(names)-opts.Newest:]
		}
		recs := make([]registry.Record, 0, len(names))
		for _, n := range names {
			data, stat, err := c.conn.Get(dir + "/" + n)
			c.countRead("get", err)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return err
			}
			recs = append(recs, registry.Record{Name: n, Data: data, Rev: stat.Mzxid, Ephemeral: stat.EphemeralOwner != 0})
			rev = max(rev, stat.Mzxid)
		}
		l = registry.Listing{Records: recs, Rev: rev}
		return nil
	})
	if err != nil {
		return registry.Listing{}, fmt.Errorf("zookeeper: read %s: %w", dir, err)
	}
	return l, nil
}

// historyPrefix names the sequential nodes Append creates:
// dir/entry-0000000042, which sort in the order they were created.
const historyPrefix = "entry-"

// Append creates a persistent sequential node dir/entry-<seq>, then
// deletes the oldest beyond keep.
func (s store) Append(ctx context.Context, dir string, data []byte, keep int) error {
	c := s.c
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return err
	}
	return call(ctx, func() error {
		if err := c.ensurePath(dir); err != nil {
			return err
		}
		_, err := c.conn.Create(dir+"/"+historyPrefix, data, zk.FlagSequence, c.acl())
		c.countWrite("create", err)
		if err != nil {
			return fmt.Errorf("zookeeper: append to %s: %w", dir, c.denied(dir, err))
		}
		names, _, err := c.conn.Children(dir)
		c.countRead("children", err)
		if err != nil || len(names) <= keep {
			return nil // trimmed by the next append
		}
		sort.Strings(names) // same prefix, zero-padded sequence
		for _, n := range names[:len(names)-keep] {
			err := c.conn.Delete(dir+"/"+n, -1)
			c.countWrite("delete", err)
		}
		return nil
	})
}

// Keep keeps dir/name as an ephemeral node of the session (ephemeral.go),
// re-created on the next session after expiry.
func (s store) Keep(ctx context.Context, dir, name string, data []byte) error {
	if err := registry.ValidateRecordName(name); err != nil {
		return err
	}
	c := s.c
	key := dir + "/" + name
	c.mu.Lock()
	e, ok := c.acks[key]
	if !ok {
		e = c.startEphemeral(c.ctx, dir, name, false, data)
		c.acks[key] = e
	}
	c.mu.Unlock()
	if !ok {
		if err := e.waitFirst(ctx); err != nil {
			c.mu.Lock()
			delete(c.acks, key)
			c.mu.Unlock()
			return err
		}
		return nil
	}
	return e.update(ctx, data)
}

// Watch follows dir's children (watch.go: only what changed is read). The
// snapshot's revision is the largest of dir's pzxid and the children's
// mzxids.
func (s store) Watch(ctx context.Context, dir string, decode registry.Decoder, out chan<- registry.Snapshot) error {
	cd := codec[any]{fromData: decode}
	return watchChildren(ctx, s.c, dir, cd, func(entries map[string]entry[any], rev int64) bool {
		snap := registry.Snapshot{Rev: rev}
		for _, e := range entries {
			if e.ok {
				snap.Values = append(snap.Values, e.val)
			}
		}
		select {
		case out <- snap:
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// Skip counts a bad record under dir's label and logs it.
func (s store) Skip(dir, name string, err error) {
	s.c.m.RecordsSkipped.WithLabelValues(backendName, dir).Inc()
	s.c.log.Warn("skipping bad registry record", "node", dir+"/"+name, "err", err)
}
