// Package bench holds syncstack's benchmarks against real servers. They are
// Go benchmarks meant to run once each (-benchtime 1x): `make bench`.
// SYNCSTACK_BENCH_QUICK=1 shortens the long-running ones.
package bench
