// Package static "watches" a fixed list of servers: it sends it once.
package static

import (
	"context"

	"github.com/syncstack/syncstack/registry"
)

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
