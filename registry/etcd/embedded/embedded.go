// Package embedded runs a real single-node etcd server inside the process
// (go.etcd.io/etcd/server/v3/embed): the zero-setup registry for the demo
// and for a single host. Production fleets point nerve and synapse at an
// external etcd cluster or ZooKeeper ensemble instead.
package embedded

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// Config configures the server.
type Config struct {
	// Dir holds the data; it survives restarts.
	Dir string
	// ClientURL is where clients connect (default http://127.0.0.1:2379).
	ClientURL string
	// PeerURL is the raft peer listener (default http://127.0.0.1:2380).
	PeerURL string
	// Fast shortens raft timers (10 ms ticks): right for one node on one
	// host, as there is no network between peers.
	Fast bool
	// LogLevel is etcd's (default "error").
	LogLevel string
	// CheapPasswords hashes etcd users' passwords at bcrypt's minimum
	// cost: logins in milliseconds, for tests only.
	CheapPasswords bool
	// AuthTokenTTL is how long, in seconds, an unused simple auth token
	// stays valid (etcd's default: 300); tests shorten it.
	AuthTokenTTL uint
	// TLS serves clients over TLS (ClientURL must be https://).
	TLS *TLS
}

// TLS is the server side of client TLS.
type TLS struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, requires client certificates signed by it.
	ClientCAFile string
}

// Server is a running embedded etcd.
type Server struct {
	etcd      *embed.Etcd
	ClientURL string
}

// Start starts the server and waits until it serves (up to 30s).
func Start(c Config) (*Server, error) {
	if c.Dir == "" {
		return nil, errors.New("embedded etcd: dir: missing")
	}
	if c.ClientURL == "" {
		c.ClientURL = "http://127.0.0.1:2379"
	}
	if c.PeerURL == "" {
		c.PeerURL = "http://127.0.0.1:2380"
	}
	if c.LogLevel == "" {
		c.LogLevel = "error"
	}
	client, err := url.Parse(c.ClientURL)
	if err != nil || client.Host == "" {
		return nil, fmt.Errorf("embedded etcd: client url %q: not a URL", c.ClientURL)
	}
	peer, err := url.Parse(c.PeerURL)
	if err != nil || peer.Host == "" {
		return nil, fmt.Errorf("embedded etcd: peer url %q: not a URL", c.PeerURL)
	}
	cfg := embed.NewConfig()
	cfg.Name = "syncstack"
	cfg.Dir = c.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = c.LogLevel
	if c.TLS != nil {
		if client.Scheme != "https" {
			return nil, fmt.Errorf("embedded etcd: client url %q: TLS needs https://", c.ClientURL)
		}
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile,
			TrustedCAFile: c.TLS.ClientCAFile, ClientCertAuth: c.TLS.ClientCAFile != ""}
	}
	if c.Fast {
		cfg.TickMs, cfg.ElectionMs = 10, 100
	}
	if c.CheapPasswords {
		cfg.BcryptCost = 4 // bcrypt's minimum
	}
	if c.AuthTokenTTL > 0 {
		cfg.AuthTokenTTL = c.AuthTokenTTL
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd: not ready after 30s")
	}
	return &Server{etcd: e, ClientURL: c.ClientURL}, nil
}

// Close stops the server; the data stays in Dir.
func (s *Server) Close() { s.etcd.Close() }

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }
