package testserver

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
)

// HoldBackend is an HTTP backend whose /hold requests stay in flight until
// the test calls Free: a request attached to a server while the test
// changes that server. Any other path answers its ID at once.
type HoldBackend struct {
	ID, Host string
	Port     int
	// Entered receives once per /hold request that reached the backend.
	Entered chan struct{}
	release chan struct{}
	once    sync.Once
}

// StartHoldBackend listens on host (a loopback address) and a free port;
// it is stopped, and every held request released, in t.Cleanup.
func StartHoldBackend(t testing.TB, id, host string) *HoldBackend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(FreePort(t))))
	if err != nil {
		t.Fatal(err)
	}
	h := &HoldBackend{ID: id, Host: host, Port: ln.Addr().(*net.TCPAddr).Port, Entered: make(chan struct{}, 16), release: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			h.Entered <- struct{}{}
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprint(w, id)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { h.Free(); srv.Close() })
	return h
}

// Free lets every held request (and every later one) complete.
func (h *HoldBackend) Free() { h.once.Do(func() { close(h.release) }) }
