// Package scale is `make scale`: a fleet of real synapse processes on one
// registry cluster (3-node ZooKeeper, 3-member etcd, each started on
// loopback), measured. A benchmark, not a test: it runs only with
// `go test -run '^$' -bench . ./scale/` and writes scale/results.json.
//
// What it measures, per registry (see SCALING.md for the figures):
//   - fan-out: one registry write → the time until the LAST of N synapses
//     wrote it to its file_output file (inotify timestamps, one clock);
//   - deploy wave: R backends of one service deregistered and registered
//     again, paced and as a burst: registry reads per synapse per change
//     (the synapses' own syncstack_registry_reads_total), server reads,
//     CPU and memory of the registry processes, watch counts;
//   - storms: leader kill and full-ensemble restart with the fleet
//     connected (N synapses and N nerves, each nerve registering one
//     instance that every synapse watches): connections over time, reads after reconnect, time until
//     every synapse is current, whether any synapse's output ever lost a
//     backend that stayed registered or a nerve's instance, and the
//     nerves' re-registrations;
//   - cost per watcher: server memory and CPU with 0 and N synapses, and
//     with N bare sessions that watch nothing.
//
// Knobs (environment): SYNCSTACK_SCALE_N (synapses, default 50),
// SYNCSTACK_SCALE_S (services each watches, default 200),
// SYNCSTACK_SCALE_B (backends per service, default 3),
// SYNCSTACK_SCALE_WRITES (fan-out writes per round, default 100),
// SYNCSTACK_SCALE_ROUNDS (rounds of fan-out, wave and storms, default 3),
// SYNCSTACK_SCALE_HAPROXY (synapses that also drive a real HAProxy,
// default 3), SYNCSTACK_SCALE_R (backends in the deploy wave, default 20),
// SYNCSTACK_SCALE_NERVES (nerve processes, default N),
// SYNCSTACK_SCALE_REGISTRIES (default "zookeeper,etcd"),
// SYNCSTACK_SCALE_TIER=1 (every synapse reads through a ZooKeeper observer
// or an etcd grpc-proxy only), SYNCSTACK_SCALE_BIN (a synapse binary built
// elsewhere), SYNCSTACK_SCALE_JSON (where to write the results).
package scale
