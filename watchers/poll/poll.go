// Package poll is the loop the polling watchers (file, dns, plugin) share,
// after Prometheus's discovery/refresh: read the whole set every interval,
// send it when it changed, and on a failed read send nothing (the last set
// stands) and read again after a jittered backoff.
package poll

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// Read returns the whole current set. An error means nothing is known:
// the last set stands.
type Read func(ctx context.Context) ([]registry.Instance, error)

// Options configure Run.
type Options struct {
	// Interval between reads; it must be positive: each method has its
	// own default.
	Interval time.Duration
	// Read reads the set.
	Read Read
	// Log gets one warning per failed read; Attrs name the watcher.
	Log   *slog.Logger
	Attrs []any
}

// Run reads every Interval and sends the set (sorted, deduplicated) on
// out the first time a read succeeds and then whenever it changed, until
// ctx ends. A failed read is retried after a jittered backoff that starts
// at min(1s, Interval) and grows to Interval, so a failure heals sooner
// than the next regular read, and a fleet that failed together does not
// read again in lockstep.
func Run(ctx context.Context, out chan<- []registry.Instance, o Options) error {
	if o.Interval <= 0 {
		return errors.New("poll: Interval must be positive (the method sets its default)")
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	retry := backoff.New(min(time.Second, o.Interval), o.Interval)
	var sent []registry.Instance
	first := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		set, err := o.Read(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			wait := retry.Next()
			log.Warn("watcher read failed; keeping the last set", append(slices.Clone(o.Attrs), "err", err, "retry_in", wait)...)
			timer.Reset(wait)
			continue
		}
		retry.Reset()
		set = registry.Dedupe(append([]registry.Instance{}, set...))
		if first || !registry.EqualSets(set, sent) {
			select {
			case out <- set:
				first, sent = false, set
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		timer.Reset(o.Interval)
	}
}
