package synctl

import "github.com/syncstack/syncstack/registry"

// The slices of a registry synctl's functions use: each takes the roles it
// needs, so a reader of the code (or a test double) sees at a glance what
// a function can touch. connect still returns the whole registry.Backend,
// which has them all.

// fleetReader reads everything a plan or a status is built from: the
// acks and catalogs (which services exist, which synapses live), the
// overrides, and each service's backends.
type fleetReader interface {
	registry.Discovery
	registry.OverrideReader
	registry.AckReader
	registry.CatalogReader
}

// expirer removes the overrides that have run out and records each in
// the audit trail.
type expirer interface {
	registry.Overrides
	registry.History
}

// finisher records a change in the audit trail and waits for the acks.
type finisher interface {
	registry.History
	registry.AckReader
}

// pageReader is what the status page shows: the fleet and the history.
type pageReader interface {
	fleetReader
	registry.History
}
