package registry

import (
	"context"
	"encoding/json"
)

// AppendHistory implements History: a persistent record appended to
// HistoryDir(); the oldest beyond MaxHistory go.
func (r Records) AppendHistory(ctx context.Context, h HistoryEntry) error {
	if err := h.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return r.Store.Append(ctx, r.HistoryDir(), data, MaxHistory)
}

// History implements History: up to limit newest entries (all when limit
// is 0), oldest first.
func (r Records) History(ctx context.Context, limit int) ([]HistoryEntry, error) {
	dir := r.HistoryDir()
	l, err := r.Store.List(ctx, dir, ListOptions{Newest: max(limit, 0)})
	if err != nil {
		return nil, err
	}
	out := make([]HistoryEntry, 0, len(l.Records))
	for _, rec := range l.Records {
		h, err := DecodeHistoryEntry(rec.Data)
		if err != nil {
			r.Store.Skip(dir, rec.Name, err)
			continue
		}
		out = append(out, h)
	}
	return out, nil
}
