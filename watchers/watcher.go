// Package watchers follow where a service's backends are: one subpackage
// per discovery method (registrywatch for zookeeper and etcd, file, dns,
// static, plugin), each owning its config type and registering itself
// here (Register); package watchers/all imports every built-in one. A
// watcher knows nothing of HAProxy, and this package imports no method
// and no registry client.
package watchers

import (
	"context"

	"github.com/syncstack/syncstack/registry"
)

// Watcher sends the full set of a service's backends, then the full set
// again after every change, until ctx ends. It never closes out. A failed
// read sends nothing: the last set stands. A set sent is shared, not
// copied, by its receivers (synapse's pipeline and state cache): neither
// the watcher nor they write it afterwards.
type Watcher interface {
	Run(ctx context.Context, out chan<- []registry.Instance) error
}
