// Package plugin is the watcher that asks an out-of-process plugin (package
// github.com/syncstack/syncstack/plugin) for a service's instances every
// interval, and sends the set when it changed.
package plugin

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
)

// DefaultInterval is how often the plugin is asked when no interval is set.
const DefaultInterval = 10 * time.Second

// Watcher asks Client for Service's instances every Interval.
type Watcher struct {
	Client   *plugin.Client
	Service  string
	Config   map[string]string
	Interval time.Duration
	Log      *slog.Logger
	Metrics  *registry.Metrics
}

// Run implements watchers.Watcher. A failed or timed-out call sends
// nothing (the last set stands); an instance that fails validation is
// skipped and counted, the rest sent. The plugin process ends with Run.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	defer w.Client.Close()
	interval := w.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	m := w.Metrics
	if m == nil {
		m = registry.DefaultMetrics()
	}
	var last []registry.Instance
	sent := false
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, min(interval, 30*time.Second))
		set, err := w.Client.Discover(cctx, plugin.DiscoverRequest{Service: w.Service, Config: w.Config})
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			log.Warn("plugin watcher: keeping the last set", "service", w.Service, "err", err)
		} else {
			good := set[:0]
			for _, inst := range set {
				if err := inst.Validate(); err != nil {
					m.RecordsSkipped.WithLabelValues("plugin", w.Service).Inc()
					log.Warn("skipping bad record from plugin", "service", w.Service, "err", err)
					continue
				}
				good = append(good, inst)
			}
			if !sent || !slices.EqualFunc(good, last, registry.Instance.Equal) {
				select {
				case out <- good:
				case <-ctx.Done():
					return ctx.Err()
				}
				last, sent = good, true
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
