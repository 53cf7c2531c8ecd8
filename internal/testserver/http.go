package testserver

import (
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// Backend is an HTTP server on a loopback address that answers every
// request with its ID (after ?sleep=DURATION, if given) and counts what it
// served.
type Backend struct {
	ID     string
	Host   string
	Port   int
	Served atomic.Int64
	srv    *http.Server
}

// StartBackend listens on host (127.0.0.11, 127.0.0.12, ... stand for
// different machines) on a free port below 32768.
func StartBackend(t testing.TB, id, host string) *Backend {
	t.Helper()
	var ln net.Listener
	var err error
	for range 20 {
		if ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", host, FreePort(t))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("testserver: backend %s: %v", id, err)
	}
	b := &Backend{ID: id, Host: host, Port: ln.Addr().(*net.TCPAddr).Port}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.Served.Add(1)
		// ?sleep=DURATION holds the answer: a request in flight.
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprint(w, id)
	})}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// Close stops the backend.
func (b *Backend) Close() { b.srv.Close() }
