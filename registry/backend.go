package registry

import (
	"context"
	"errors"
)

// The role interfaces: each user of a registry depends on the slice it
// needs. nerve registers (Registrar); synapse watches (Discovery), reads
// overrides (OverrideReader), publishes acks (AckWriter) and its catalog
// (CatalogWriter); synctl writes overrides (Overrides) and reads acks,
// catalogs and history. The zookeeper and etcd subpackages implement
// them all, as Backend: registrations and watches each its own way, the
// fleet-wide records (overrides, acks, catalogs, history) once, in
// Records (store.go), over each backend's small Store.

// Registrar keeps records registered.
type Registrar interface {
	// Register keeps inst registered under path until ctx ends or the
	// registration is deregistered, re-creating it at once whenever the
	// session or lease that held it is lost. The first write happens before
	// Register returns; an error means nothing is registered.
	Register(ctx context.Context, path string, inst Instance) (Registration, error)
}

// Discovery watches the records under a path.
type Discovery interface {
	// Watch sends the full set of valid instances under path, then the full
	// set again after every change, until ctx ends. Records that fail to
	// decode are skipped and counted. A lost connection never yields a
	// smaller set: only a removal the registry confirms does.
	Watch(ctx context.Context, path string, opts DecodeOptions, out chan<- []Instance) error
}

// OverrideReader reads the operators' overrides.
type OverrideReader interface {
	// Overrides reads every override once.
	Overrides(ctx context.Context) (OverrideSet, error)
	// WatchOverrides sends the override set, then every new one, until ctx ends.
	WatchOverrides(ctx context.Context, out chan<- OverrideSet) error
}

// Overrides reads and writes the operators' overrides.
type Overrides interface {
	OverrideReader
	// PutOverride writes o (replacing the record with the same key) and
	// returns the revision that contains the write.
	PutOverride(ctx context.Context, o Override) (int64, error)
	// DeleteOverride removes the override with key; it returns the
	// revision that contains the removal. A missing key is not an error.
	DeleteOverride(ctx context.Context, key string) (int64, error)
}

// AckWriter publishes a synapse's acks.
type AckWriter interface {
	// PutAck publishes this process's ack; it lives as long as the session
	// or lease and is re-published after one is lost.
	PutAck(ctx context.Context, a Ack) error
}

// AckReader lists the acks of the live synapses.
type AckReader interface {
	// Acks lists the acks of the live synapses.
	Acks(ctx context.Context) ([]Ack, error)
}

// CatalogWriter publishes a synapse's catalog.
type CatalogWriter interface {
	// PutCatalog writes (or replaces) a synapse's persistent catalog of
	// the services it serves, and returns the revision of the write; it
	// outlives the session.
	PutCatalog(ctx context.Context, c Catalog) (int64, error)
	// CatalogRevision returns the revision of the last write of synapse
	// id's catalog, reading no more than that (the synapse checks that
	// its catalog is still the one it wrote); ok is false when there is
	// none.
	CatalogRevision(ctx context.Context, id string) (rev int64, ok bool, err error)
}

// CatalogReader lists the synapses' catalogs.
type CatalogReader interface {
	// Catalogs lists every catalog; bad ones are skipped and counted.
	Catalogs(ctx context.Context) ([]Catalog, error)
}

// History is the audit trail of synctl's changes.
type History interface {
	// AppendHistory adds an entry to the audit trail, dropping the oldest
	// beyond MaxHistory.
	AppendHistory(ctx context.Context, h HistoryEntry) error
	// History returns up to limit newest entries, oldest first.
	History(ctx context.Context, limit int) ([]HistoryEntry, error)
}

// Backend is a whole registry: every role, and Close. The zookeeper and
// etcd subpackages implement it; users keep the roles they need.
type Backend interface {
	Registrar
	Discovery
	Overrides
	AckWriter
	AckReader
	CatalogWriter
	CatalogReader
	History
	// Close ends the session: registrations and acks vanish.
	Close() error
}

// Registration is one instance kept registered by a Registrar.
type Registration interface {
	// Update rewrites the record (a new weight, say) in place.
	Update(ctx context.Context, inst Instance) error
	// Deregister removes the record and stops keeping it. It returns nil
	// once the registry has confirmed the removal (or the session or lease
	// that held the record is known to be gone). If ctx ends first it
	// returns an error and the removal goes on in the background, retried
	// until confirmed or the Backend is closed: a session or lease outlives
	// an outage of the registry, so a removal given up would leave the
	// record there for good. Calling it again waits again.
	Deregister(ctx context.Context) error
	// Key is where the record lives now (it changes when it is re-created).
	Key() string
}

// ErrClosed is returned by a Backend or Registration used after Close.
var ErrClosed = errors.New("registry: closed")
