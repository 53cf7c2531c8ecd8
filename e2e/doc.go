// Package e2e holds the end-to-end suite: the built nerve, synapse and
// synctl binaries as real processes, real HAProxy, a 3-node ZooKeeper
// ensemble or etcd, backend processes that can be killed, and a load
// generator sending requests through HAProxy the whole time.
package e2e
