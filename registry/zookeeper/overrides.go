package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

func (c *Client) overridesDir() string { return c.cfg.Root + "/overrides" }
func (c *Client) acksDir() string      { return c.cfg.Root + "/acks" }

// PutOverride implements registry.Backend. The revision is the zxid of the
// write.
func (c *Client) PutOverride(ctx context.Context, o registry.Override) (int64, error) {
	data, err := o.Encode()
	if err != nil {
		return 0, err
	}
	p := c.overridesDir() + "/" + o.Key()
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
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
			if err := c.ensurePath(c.overridesDir()); err != nil {
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
			_, stat, err = c.conn.Exists(p)
			c.countRead("exists", err)
			if err != nil {
				return err
			}
			rev = stat.Mzxid
			return nil
		}
		return errors.New("override node keeps changing under us")
	})
	if err != nil {
		return 0, fmt.Errorf("zookeeper: put override %s: %w", p, c.denied(p, err))
	}
	return rev, nil
}

// DeleteOverride implements registry.Backend. The revision is the pzxid of
// the overrides directory after the removal.
func (c *Client) DeleteOverride(ctx context.Context, key string) (int64, error) {
	if err := validateKey(key); err != nil {
		return 0, err
	}
	p := c.overridesDir() + "/" + key
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return 0, err
	}
	var rev int64
	err := call(ctx, func() error {
		err := c.conn.Delete(p, -1)
		c.countWrite("delete", err)
		if err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
		_, stat, err := c.conn.Exists(c.overridesDir())
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
		return 0, fmt.Errorf("zookeeper: delete override %s: %w", p, c.denied(p, err))
	}
	return rev, nil
}

// validateKey refuses a key that would leave the overrides directory.
func validateKey(key string) error {
	if key == "" || key == "." || key == ".." || strings.ContainsAny(key, "/\x00\n#") {
		return fmt.Errorf("override key %q is not valid", key)
	}
	return nil
}

// Overrides implements registry.Backend.
func (c *Client) Overrides(ctx context.Context) (registry.OverrideSet, error) {
	var set registry.OverrideSet
	err := c.readAll(ctx, c.overridesDir(), func(name string, data []byte, stat *zk.Stat) {
		set.Revision = max(set.Revision, stat.Mzxid)
		o, err := registry.DecodeOverride(data)
		if err != nil {
			c.skip(c.overridesDir(), name, err)
			return
		}
		set.Overrides = append(set.Overrides, o)
	}, &set.Revision)
	sortOverrides(set.Overrides)
	return set, err
}

// Acks implements registry.Backend.
func (c *Client) Acks(ctx context.Context) ([]registry.Ack, error) {
	var acks []registry.Ack
	var rev int64
	err := c.readAll(ctx, c.acksDir(), func(name string, data []byte, stat *zk.Stat) {
		a, err := registry.DecodeAck(data)
		if err == nil {
			err = registry.CheckAckLive(name, a, stat.EphemeralOwner != 0)
		}
		if err != nil {
			c.skip(c.acksDir(), name, err)
			return
		}
		acks = append(acks, a)
	}, &rev)
	slices.SortFunc(acks, func(a, b registry.Ack) int { return strings.Compare(a.ID, b.ID) })
	return acks, err
}

// readAll lists dir and reads each child once; a missing dir is empty.
func (c *Client) readAll(ctx context.Context, dir string, each func(name string, data []byte, stat *zk.Stat), pzxid *int64) error {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return err
	}
	type child struct {
		name string
		data []byte
		stat *zk.Stat
	}
	var children []child
	err := call(ctx, func() error {
		names, stat, err := c.conn.Children(dir)
		c.countRead("children", err)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return err
		}
		*pzxid = stat.Pzxid
		for _, n := range names {
			data, stat, err := c.conn.Get(dir + "/" + n)
			c.countRead("get", err)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return err
			}
			children = append(children, child{n, data, stat})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("zookeeper: read %s: %w", dir, err)
	}
	for _, ch := range children {
		each(ch.name, ch.data, ch.stat)
	}
	return nil
}

func (c *Client) skip(dir, name string, err error) {
	c.m.RecordsSkipped.WithLabelValues(backendName, dir).Inc()
	c.log.Warn("skipping bad registry record", "node", dir+"/"+name, "err", err)
}

func sortOverrides(s []registry.Override) {
	slices.SortFunc(s, func(a, b registry.Override) int { return strings.Compare(a.Key(), b.Key()) })
}

// WatchOverrides implements registry.Backend. A new set is sent whenever the
// revision moves, even when a bad record was all that changed, so that acks
// always name the latest revision.
func (c *Client) WatchOverrides(ctx context.Context, out chan<- registry.OverrideSet) error {
	dir := c.overridesDir()
	cd := codec[registry.Override]{
		fromData: func(_ string, data []byte) (registry.Override, error) { return registry.DecodeOverride(data) },
	}
	last := int64(-1)
	return watchChildren(ctx, c, dir, cd, func(entries map[string]entry[registry.Override], rev int64) bool {
		if rev == last {
			return true
		}
		set := registry.OverrideSet{Revision: rev}
		for _, e := range entries {
			if e.ok {
				set.Overrides = append(set.Overrides, e.val)
			}
		}
		sortOverrides(set.Overrides)
		select {
		case out <- set:
			last = rev
			return true
		case <-ctx.Done():
			return false
		}
	})
}

// PutAck implements registry.Backend: an ephemeral node Root/acks/<id>.
func (c *Client) PutAck(ctx context.Context, a registry.Ack) error {
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	if err := a.Validate(); err != nil {
		return err
	}
	data, err := encodeJSON(a)
	if err != nil {
		return err
	}
	c.mu.Lock()
	e, ok := c.acks[a.ID]
	if !ok {
		e = c.startEphemeral(c.ctx, c.acksDir(), a.ID, false, data)
		c.acks[a.ID] = e
	}
	c.mu.Unlock()
	if !ok {
		if err := e.waitFirst(ctx); err != nil {
			c.mu.Lock()
			delete(c.acks, a.ID)
			c.mu.Unlock()
			return err
		}
		return nil
	}
	return e.update(ctx, data)
}
