// Package registrywatch watches a service's backends where nerve registers
// them: the zookeeper and etcd discovery methods. Both backends implement
// registry.Discovery, so one watcher serves both; the registry packages do
// the reading (only what changed), the skipping of bad records and the
// keeping of the last set through outages.
package registrywatch

import (
	"context"

	"github.com/syncstack/syncstack/registry"
)

// Watcher follows one path through a client shared by every service of a
// synapse that uses the same cluster (one ZooKeeper session, one etcd
// connection).
type Watcher struct {
	Client registry.Discovery
	Path   string
	Opts   registry.DecodeOptions
}

// Run implements watchers.Watcher.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	return w.Client.Watch(ctx, w.Path, w.Opts, out)
}
