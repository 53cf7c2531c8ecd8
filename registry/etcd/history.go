package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/syncstack/syncstack/registry"
)

func (c *Client) historyPrefix() string { return c.cfg.Root + "/history/" }

// AppendHistory implements registry.Backend: a key Root/history/<unix ns>;
// the oldest beyond registry.MaxHistory go.
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
	key := fmt.Sprintf("%s%020d", c.historyPrefix(), time.Now().UnixNano())
	cli, err := c.conn(ctx)
	if err != nil {
		return fmt.Errorf("etcd: history: %w", err)
	}
	_, err = cli.Put(ctx, key, string(data))
	c.count("writes", "put", err)
	if err != nil {
		return fmt.Errorf("etcd: history: %w", c.explain(err))
	}
	resp, err := cli.Get(ctx, c.historyPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	c.count("reads", "range", err)
	if err != nil || len(resp.Kvs) <= registry.MaxHistory {
		return nil
	}
	last := resp.Kvs[len(resp.Kvs)-registry.MaxHistory-1].Key
	_, err = cli.Delete(ctx, c.historyPrefix(), clientv3.WithRange(string(last)+"\x00"))
	c.count("writes", "delete", err)
	return nil
}

// History implements registry.Backend.
func (c *Client) History(ctx context.Context, limit int) ([]registry.HistoryEntry, error) {
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	cli, err := c.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd: history: %w", err)
	}
	resp, err := cli.Get(ctx, c.historyPrefix(), opts...)
	c.count("reads", "range", err)
	if err != nil {
		return nil, fmt.Errorf("etcd: history: %w", c.explain(err))
	}
	out := make([]registry.HistoryEntry, 0, len(resp.Kvs))
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		h, err := registry.DecodeHistoryEntry(resp.Kvs[i].Value)
		if err != nil {
			c.skip(c.historyPrefix(), string(resp.Kvs[i].Key), err)
			continue
		}
		out = append(out, h)
	}
	return out, nil
}
