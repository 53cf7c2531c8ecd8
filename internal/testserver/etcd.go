package testserver

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry/etcd/embedded"
)

// Etcd is a real single-node etcd server embedded in the test process.
type Etcd struct {
	Endpoint string // http://127.0.0.1:port
	t        testing.TB
	cfg      embedded.Config

	mu  sync.Mutex
	srv *embedded.Server
}

// StartEtcd starts an embedded etcd on loopback ports below 32768 with a
// data directory in t.TempDir(), waits until it is ready, and stops it in
// t.Cleanup.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return startEtcd(t, etcdConfig(t))
}

// StartEtcdShortTokens is StartEtcd with simple auth tokens that expire
// after ttl seconds unused (etcd's default is 300).
func StartEtcdShortTokens(t testing.TB, ttl uint) *Etcd {
	t.Helper()
	cfg := etcdConfig(t)
	cfg.CheapPasswords, cfg.AuthTokenTTL = true, ttl
	return startEtcd(t, cfg)
}

// StartEtcdTLS starts an embedded etcd that serves clients over TLS with
// pki's server certificate and requires client certificates signed by its
// CA.
func StartEtcdTLS(t testing.TB, pki *PKI) *Etcd {
	t.Helper()
	cfg := etcdConfig(t)
	cfg.ClientURL = fmt.Sprintf("https://127.0.0.1:%d", FreePort(t))
	cfg.TLS = &embedded.TLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, ClientCAFile: pki.CA}
	// The server runs in the (race-instrumented) test binary, where
	// bcrypt's default cost takes seconds per login.
	cfg.CheapPasswords = true
	return startEtcd(t, cfg)
}

// etcdConfig is a one-node embedded etcd on free loopback ports, with its
// data in t.TempDir().
func etcdConfig(t testing.TB) embedded.Config {
	return embedded.Config{
		Dir:       t.TempDir(),
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
		Fast:      true,
		LogLevel:  "fatal", // shutdown logs spurious "server closed" errors
	}
}

func startEtcd(t testing.TB, cfg embedded.Config) *Etcd {
	t.Helper()
	e := &Etcd{Endpoint: cfg.ClientURL, t: t, cfg: cfg}
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
	var srv *embedded.Server
	var err error
	// A restarted server can find its ports busy for a moment; retry.
	for range 50 {
		if srv, err = embedded.Start(e.cfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("testserver: %v", err)
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

// Running reports whether the server was started and not stopped.
func (e *Etcd) Running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.srv != nil
}
