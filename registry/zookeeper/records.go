package zookeeper

import (
	"context"

	"github.com/syncstack/syncstack/registry"
)

// The fleet-wide records (overrides, acks, catalogs, history) are
// registry.Records over the client's store (store.go), under Root:
//
//	Root/overrides/<key>       persistent; the revision is the zxid of the write
//	Root/acks/<synapse id>     ephemeral, re-created after a session expires
//	Root/catalog/<synapse id>  persistent
//	Root/history/entry-<seq>   persistent sequential; the oldest beyond registry.MaxHistory go

func (c *Client) records() registry.Records {
	return registry.Records{Store: store{c}, Root: c.cfg.Root}
}

func (c *Client) overridesDir() string { return c.records().OverridesDir() }
func (c *Client) acksDir() string      { return c.records().AcksDir() }
func (c *Client) catalogDir() string   { return c.records().CatalogDir() }
func (c *Client) historyDir() string   { return c.records().HistoryDir() }

// PutOverride implements registry.Overrides.
func (c *Client) PutOverride(ctx context.Context, o registry.Override) (int64, error) {
	return c.records().PutOverride(ctx, o)
}

// DeleteOverride implements registry.Overrides. The revision is the pzxid
// of the overrides directory after the removal.
func (c *Client) DeleteOverride(ctx context.Context, key string) (int64, error) {
	return c.records().DeleteOverride(ctx, key)
}

// Overrides implements registry.OverrideReader.
func (c *Client) Overrides(ctx context.Context) (registry.OverrideSet, error) {
	return c.records().Overrides(ctx)
}

// WatchOverrides implements registry.OverrideReader.
func (c *Client) WatchOverrides(ctx context.Context, out chan<- registry.OverrideSet) error {
	return c.records().WatchOverrides(ctx, out)
}

// PutAck implements registry.AckWriter.
func (c *Client) PutAck(ctx context.Context, a registry.Ack) error {
	return c.records().PutAck(ctx, a)
}

// Acks implements registry.AckReader.
func (c *Client) Acks(ctx context.Context) ([]registry.Ack, error) {
	return c.records().Acks(ctx)
}

// PutCatalog implements registry.CatalogWriter.
func (c *Client) PutCatalog(ctx context.Context, cat registry.Catalog) error {
	return c.records().PutCatalog(ctx, cat)
}

// Catalogs implements registry.CatalogReader.
func (c *Client) Catalogs(ctx context.Context) ([]registry.Catalog, error) {
	return c.records().Catalogs(ctx)
}

// AppendHistory implements registry.History.
func (c *Client) AppendHistory(ctx context.Context, h registry.HistoryEntry) error {
	return c.records().AppendHistory(ctx, h)
}

// History implements registry.History.
func (c *Client) History(ctx context.Context, limit int) ([]registry.HistoryEntry, error) {
	return c.records().History(ctx, limit)
}
