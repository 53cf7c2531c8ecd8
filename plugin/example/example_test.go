package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/plugin"
)

// The example, built and run as nerve and synapse run it.
func TestExamplePlugin(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "example")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	c, err := plugin.NewClient(plugin.Config{Path: bin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name    string
		port    int
		config  map[string]string
		wantErr string
	}{
		{"Healthy", port, map[string]string{"path": t.TempDir(), "min_free_percent": "0"}, ""},
		{"DiskFull", port, map[string]string{"min_free_percent": "100.1"}, "free, under"},
		{"BadConfig", port, map[string]string{"min_free_percent": "lots"}, "not a number"},
		{"PortClosed", 1, map[string]string{"min_free_percent": "0"}, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Check(ctx, plugin.CheckRequest{Host: "127.0.0.1", Port: tc.port, Timeout: time.Second, Config: tc.config})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("Check = %v, want %q", err, tc.wantErr)
			}
		})
	}

	inventory := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/web.json" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.2","port":80,"name":"b"}]`))
	}))
	t.Cleanup(inventory.Close)
	set, err := c.Discover(ctx, plugin.DiscoverRequest{Service: "web", Config: map[string]string{"url": inventory.URL + "/web.json"}})
	if err != nil || len(set) != 2 || set[1].Host != "10.0.0.2" {
		t.Errorf("Discover = %v, %v", set, err)
	}
	if _, err := c.Discover(ctx, plugin.DiscoverRequest{Config: map[string]string{"url": inventory.URL + "/nope"}}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("Discover of a missing list = %v", err)
	}
}
