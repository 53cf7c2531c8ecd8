// Package plugin is the watcher that asks an out-of-process plugin (package
// github.com/syncstack/syncstack/plugin) for a service's instances every
// interval, and sends the set when it changed.
package plugin

import (
	"context"
	"log/slog"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
	"github.com/syncstack/syncstack/watchers/poll"
)

func init() {
	watchers.Register("plugin", func() watchers.MethodConfig { return &Config{} })
}

// DefaultInterval is how often the plugin is asked when no interval is set.
const DefaultInterval = 10 * time.Second

// Config is method plugin's keys: the plugin (plugin, plugin_args,
// plugin_sha256, config) and how often it is asked.
type Config struct {
	Plugin plugin.Config `yaml:",inline"`
	// Interval: how often the plugin is asked (default 10s).
	Interval confutil.Duration `yaml:"interval"`
}

// Finalize implements watchers.MethodConfig.
func (c *Config) Finalize(ch *watchers.Check) {
	if err := c.Plugin.Validate(); err != nil {
		ch.Problem("", "%v", err)
	}
}

// NewWatcher implements watchers.MethodConfig.
func (c *Config) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	client, err := plugin.NewClient(c.Plugin, d.Log)
	if err != nil {
		return nil, err
	}
	return &Watcher{Client: client, Service: d.Service, Config: c.Plugin.Config, Interval: c.Interval.D(), Log: d.Log, Metrics: d.Metrics}, nil
}

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
	read := func(ctx context.Context) ([]registry.Instance, error) {
		// A hung plugin is killed at the interval (30s at most).
		cctx, cancel := context.WithTimeout(ctx, min(interval, 30*time.Second))
		defer cancel()
		set, err := w.Client.Discover(cctx, plugin.DiscoverRequest{Service: w.Service, Config: w.Config})
		if err != nil {
			return nil, err
		}
		good := set[:0]
		for _, inst := range set {
			if err := inst.Validate(); err != nil {
				m.RecordsSkipped.WithLabelValues("plugin", w.Service).Inc()
				log.Warn("skipping bad record from plugin", "service", w.Service, "err", err)
				continue
			}
			good = append(good, inst)
		}
		return good, nil
	}
	return poll.Run(ctx, out, poll.Options{Interval: interval, Read: read, Log: log, Attrs: []any{"watcher", "plugin", "service", w.Service}})
}
