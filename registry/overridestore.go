package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// PutOverride implements Overrides: the override's JSON, as the persistent
// record OverridesDir()/<o.Key()>. The revision is that of the write.
func (r Records) PutOverride(ctx context.Context, o Override) (int64, error) {
	data, err := o.Encode()
	if err != nil {
		return 0, err
	}
	return r.Store.Put(ctx, r.OverridesDir(), o.Key(), data)
}

// DeleteOverride implements Overrides.
func (r Records) DeleteOverride(ctx context.Context, key string) (int64, error) {
	if err := ValidateRecordName(key); err != nil {
		return 0, fmt.Errorf("override key: %w", err)
	}
	return r.Store.Delete(ctx, r.OverridesDir(), key)
}

// Overrides implements OverrideReader. The revision is that of the latest
// override change (a put or a removal), which is what acks name.
func (r Records) Overrides(ctx context.Context) (OverrideSet, error) {
	dir := r.OverridesDir()
	l, err := r.Store.List(ctx, dir, ListOptions{Deletions: true})
	if err != nil {
		return OverrideSet{}, err
	}
	set := OverrideSet{Revision: l.Rev}
	for _, rec := range l.Records {
		o, err := DecodeOverride(rec.Data)
		if err != nil {
			r.Store.Skip(dir, rec.Name, err)
			continue
		}
		set.Overrides = append(set.Overrides, o)
	}
	sortOverrides(set.Overrides)
	return set, nil
}

// WatchOverrides implements OverrideReader. A new set is sent whenever the
// revision moves, even when a bad record was all that changed, so that
// acks always name the latest revision.
func (r Records) WatchOverrides(ctx context.Context, out chan<- OverrideSet) error {
	decode := func(_ string, data []byte) (any, error) { return DecodeOverride(data) }
	return watchStore(ctx, r.Store, r.OverridesDir(), decode, func(s Snapshot) OverrideSet {
		set := OverrideSet{Revision: s.Rev}
		for _, v := range s.Values {
			set.Overrides = append(set.Overrides, v.(Override))
		}
		sortOverrides(set.Overrides)
		return set
	}, out)
}

func sortOverrides(s []Override) {
	slices.SortFunc(s, func(a, b Override) int { return strings.Compare(a.Key(), b.Key()) })
}

// watchStore runs s.Watch on dir and sends build's value of every snapshot
// whose revision moved to out. Delivery is latest-wins and never blocks the
// store's watch: while the consumer is busy, newer snapshots replace the
// one waiting, so the consumer always gets the latest.
func watchStore[V any](ctx context.Context, s Store, dir string, decode Decoder, build func(Snapshot) V, out chan<- V) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snaps := make(chan Snapshot)
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, dir, decode, snaps) }()
	var pending V
	var sendTo chan<- V // out while a value waits, else nil
	last := int64(-1)
	for {
		select {
		case snap := <-snaps:
			if snap.Rev == last {
				continue
			}
			last = snap.Rev
			pending, sendTo = build(snap), out
		case sendTo <- pending:
			var zero V
			pending, sendTo = zero, nil
		case err := <-done:
			return err
		}
	}
}
