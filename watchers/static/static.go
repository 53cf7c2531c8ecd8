// Package static "watches" a fixed list of servers: it sends it once.
package static

import (
	"context"

	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
)

func init() {
	watchers.Register("static", func() watchers.MethodConfig { return &Config{} })
}

// Config is method static's keys (Airbnb's base method too).
type Config struct {
	// Servers are the instance records.
	Servers []watchers.Server `yaml:"servers"`
}

// Finalize implements watchers.MethodConfig: every server needs a port.
func (c *Config) Finalize(ch *watchers.Check) { watchers.CheckServers(ch, c.Servers, false) }

// NewWatcher implements watchers.MethodConfig.
func (c *Config) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	return &Watcher{Servers: watchers.Instances(c.Servers, d.PortOverride)}, nil
}

// Watcher sends Servers once and waits for ctx to end.
type Watcher struct {
	Servers []registry.Instance
}

// Run implements watchers.Watcher.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	set := append([]registry.Instance(nil), w.Servers...)
	select {
	case out <- registry.Dedupe(set):
	case <-ctx.Done():
		return ctx.Err()
	}
	<-ctx.Done()
	return ctx.Err()
}
