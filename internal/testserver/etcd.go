package testserver

import (
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Etcd is a real single-node etcd server embedded in the test process.
type Etcd struct {
	Endpoint string // http://127.0.0.1:port
	t        testing.TB
	cfg      *embed.Config

	mu  sync.Mutex
	srv *embed.Etcd
}

// StartEtcd starts an embedded etcd on loopback ports below 32768 with a
// data directory in t.TempDir(), waits until it is ready, and stops it in
// t.Cleanup.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = t.TempDir()
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.TickMs, cfg.ElectionMs = 10, 100
	cfg.LogLevel = "fatal" // shutdown logs spurious "server closed" errors
	e := &Etcd{Endpoint: client.String(), t: t, cfg: cfg}
	e.Start()
	t.Cleanup(e.Stop)
	return e
}

// Start (re)starts the server on the same ports and data and waits until it
// is ready.
func (e *Etcd) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv != nil {
		return
	}
	var srv *embed.Etcd
	var err error
	// A restarted server can find its ports still in TIME_WAIT-free use
	// for a moment; retry briefly.
	for range 50 {
		if srv, err = embed.StartEtcd(e.cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("testserver: start embedded etcd: %v", err)
	}
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		srv.Close()
		e.t.Fatalf("testserver: embedded etcd failed: %v", err)
	case <-time.After(30 * time.Second):
		srv.Close()
		e.t.Fatal("testserver: embedded etcd not ready after 30s")
	}
	e.srv = srv
}

// Stop stops the server; its data stays for Start.
func (e *Etcd) Stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.srv == nil {
		return
	}
	e.srv.Close()
	e.srv = nil
}
