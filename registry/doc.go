// Package registry is the wire contract shared by nerve, synapse and synctl:
// the instance record that Airbnb's nerve writes (and the other shapes synapse
// reads), the overrides that synctl writes, the acks that synapse writes, and
// the validation that keeps every field that may reach haproxy.cfg safe.
//
// The backends live in subpackages: registry/zookeeper and registry/etcd.
// Both implement [Backend] so the programs above do not care which one a
// fleet runs.
package registry
