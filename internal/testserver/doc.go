// Package testserver starts real ZooKeeper and etcd servers (and a TCP proxy
// that can cut a client off) on loopback for tests, and stops them in
// t.Cleanup. It never skips: where a server cannot be started, the test fails
// with a message that says what to install.
package testserver
