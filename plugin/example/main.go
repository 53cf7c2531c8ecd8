// Command example is a syncstack plugin that serves both kinds:
//
//   - a check: healthy while the file system holding config "path" (default
//     /) has at least config "min_free_percent" (default 10) free, and the
//     instance's port accepts a TCP connection;
//   - a watcher: the instances listed as JSON (nerve records) at config
//     "url", for an inventory service that has no registry.
//
// Build it, then point nerve or synapse at the binary:
//
//	checks: [{type: plugin, plugin: /usr/local/lib/syncstack/example, config: {path: /var, min_free_percent: "15"}}]
//	discovery: {method: plugin, plugin: /usr/local/lib/syncstack/example, config: {url: "http://inventory/web.json"}, interval: 30s}
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
)

type example struct{}

// Check implements plugin.Checker.
func (example) Check(req plugin.CheckRequest) error {
	path := req.Config["path"]
	if path == "" {
		path = "/"
	}
	minFree := 10.0
	if v := req.Config["min_free_percent"]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("config min_free_percent: %q is not a number", v)
		}
		minFree = f
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if free := 100 * float64(st.Bavail) / float64(st.Blocks); free < minFree {
		return fmt.Errorf("%s has %.1f%% free, under %.1f%%", path, free, minFree)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(req.Host, strconv.Itoa(req.Port)), req.Timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// Discover implements plugin.Discoverer.
func (example) Discover(req plugin.DiscoverRequest) ([]registry.Instance, error) {
	url := req.Config["url"]
	if url == "" {
		return nil, fmt.Errorf("config url: missing")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var set []registry.Instance
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 16<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return set, nil
}

func main() { plugin.Serve(example{}) }
