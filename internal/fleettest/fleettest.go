// Package fleettest runs synapse + HAProxy pairs in-process for tests of
// the programs above synapse (synctl, e2e): each pair manages its own
// master-worker HAProxy in a temp dir, on loopback ports below 32768.
package fleettest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/synapse"
)

// Pair is one synapse and the HAProxy it manages.
type Pair struct {
	ID             string
	Dir            string
	Stats, Master  string
	Ports          map[string]int
	HAProxyMetrics *haproxy.Metrics
	cancel         context.CancelFunc
	done           chan error
}

// Options describe the fleet: one registry for discovery and overrides.
type Options struct {
	Method   string // zookeeper or etcd
	Hosts    string // comma-separated, as in YAML flow lists
	Root     string // overrides root
	Services []string
}

const tmpl = `id: {{.ID}}
state_file_path: {{.Dir}}/synapse-state.json
admin: {listen: "off"}
overrides: {method: {{.Method}}, hosts: [{{.Hosts}}], root: {{.Root}}}
haproxy:
  manage: true
  config_file_path: {{.Dir}}/haproxy.cfg
  socket_file_path: {{.Dir}}/stats.sock
  master_socket_path: {{.Dir}}/master.sock
  pid_file: {{.Dir}}/haproxy.pid
  reload_min_interval: 100ms
  defaults: [mode http, timeout connect 1s, timeout client 10s, timeout server 10s, retries 2, option redispatch]
services:
{{range .Services}}  {{.}}:
    discovery: {method: {{$.Method}}, hosts: [{{$.Hosts}}], path: /services/{{.}}}
    haproxy: {port: {{index $.Ports .}}, bind_address: 127.0.0.1, listen: [mode http, balance roundrobin]}
{{end}}`

// StartPair starts a synapse named id; it and its HAProxy stop in t.Cleanup.
func StartPair(t testing.TB, id string, o Options) *Pair {
	t.Helper()
	testserver.CheckHAProxy(t)
	p := &Pair{ID: id, Dir: t.TempDir(), Ports: map[string]int{}}
	testserver.KillHAProxyAtCleanup(t, filepath.Join(p.Dir, "haproxy.pid"))
	for _, s := range o.Services {
		p.Ports[s] = testserver.FreePort(t)
	}
	p.Stats, p.Master = filepath.Join(p.Dir, "stats.sock"), filepath.Join(p.Dir, "master.sock")
	if o.Root == "" {
		o.Root = "/syncstack"
	}
	var buf bytes.Buffer
	template.Must(template.New("").Parse(tmpl)).Execute(&buf, map[string]any{
		"ID": id, "Dir": p.Dir, "Method": o.Method, "Hosts": o.Hosts, "Root": o.Root, "Services": o.Services, "Ports": p.Ports,
	})
	path := filepath.Join(p.Dir, "synapse.yaml")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := synapse.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p.HAProxyMetrics = haproxy.NewMetrics(nil)
	s, err := synapse.New(cfg, synapse.Options{HAProxyMetrics: p.HAProxyMetrics, RegistryMetrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan error, 1)
	go func() { p.done <- s.Run(ctx) }()
	t.Cleanup(p.Stop)
	return p
}

// Stop stops the synapse (HAProxy keeps running until cleanup).
func (p *Pair) Stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
		p.cancel = nil
	}
}

// URL is the service's frontend.
func (p *Pair) URL(service string) string {
	return fmt.Sprintf("http://127.0.0.1:%d/", p.Ports[service])
}

// Reloads counts this pair's HAProxy reloads.
func (p *Pair) Reloads() float64 {
	var n float64
	for _, why := range haproxy.ReloadReasons {
		n += testutil.ToFloat64(p.HAProxyMetrics.Reloads.WithLabelValues(string(why)))
	}
	return n
}

// WaitServers waits until backend has exactly one server per key of want
// (by name prefix "<name>_") in the admin state given (0 ready, 8 drain, 1
// maint), and returns how long it took.
func (p *Pair) WaitServers(t testing.TB, backend string, want map[string]int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got map[string]testserver.ServerState
	for time.Since(start) < timeout {
		var err error
		if got, err = testserver.TryHAProxyServers(p.Stats, backend); err == nil && Matches(got, want) {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s: backend %s servers %+v, want %v", p.ID, backend, got, want)
	return 0
}

// Matches reports whether got has exactly the servers of want in their states.
func Matches(got map[string]testserver.ServerState, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for prefix, admin := range want {
		found := false
		for name, s := range got {
			if strings.HasPrefix(name, prefix+"_") && s.Admin == admin {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Get fetches url over a fresh connection and returns the body.
func Get(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
