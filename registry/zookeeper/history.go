package zookeeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

func (c *Client) historyDir() string { return c.cfg.Root + "/history" }

// AppendHistory implements registry.Backend: a persistent sequential node
// Root/history/entry-<seq>; the oldest beyond registry.MaxHistory go.
func (c *Client) AppendHistory(ctx context.Context, h registry.HistoryEntry) error {
	if err := h.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return err
	}
	dir := c.historyDir()
	return call(ctx, func() error {
		if err := c.ensurePath(dir); err != nil {
			return err
		}
		_, err := c.conn.Create(dir+"/entry-", data, zk.FlagSequence, c.acl())
		c.countWrite("create", err)
		if err != nil {
			return fmt.Errorf("zookeeper: history: %w", c.denied(dir, err))
		}
		names, _, err := c.conn.Children(dir)
		c.countRead("children", err)
		if err != nil || len(names) <= registry.MaxHistory {
			return nil
		}
		sort.Strings(names) // same prefix, zero-padded sequence
		for _, n := range names[:len(names)-registry.MaxHistory] {
			err := c.conn.Delete(dir+"/"+n, -1)
			c.countWrite("delete", err)
		}
		return nil
	})
}

// History implements registry.Backend.
func (c *Client) History(ctx context.Context, limit int) ([]registry.HistoryEntry, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if _, err := c.waitSession(ctx); err != nil {
		return nil, err
	}
	dir := c.historyDir()
	var out []registry.HistoryEntry
	err := call(ctx, func() error {
		names, _, err := c.conn.Children(dir)
		c.countRead("children", err)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return err
		}
		sort.Strings(names)
		if limit > 0 && len(names) > limit {
			names = names[len(names)-limit:]
		}
		for _, n := range names {
			data, _, err := c.conn.Get(dir + "/" + n)
			c.countRead("get", err)
			if errors.Is(err, zk.ErrNoNode) {
				continue
			}
			if err != nil {
				return err
			}
			h, err := registry.DecodeHistoryEntry(data)
			if err != nil {
				c.skip(dir, n, err)
				continue
			}
			out = append(out, h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("zookeeper: history: %w", err)
	}
	return out, nil
}
