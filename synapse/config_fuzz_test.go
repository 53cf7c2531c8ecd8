package synapse

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syncstack/syncstack/registry"
)

// FuzzLoadConfig: whatever the config file holds (YAML, or JSON as
// Airbnb's synapse.conf.json), Load never panics; it refuses with an error
// naming the file, or returns a config whose every name and threshold is
// valid.
func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{"testdata/airbnb/synapse.conf.json", "../configs/synapse.yaml"} {
		data, err := os.ReadFile(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, strings.HasSuffix(seed, ".json"))
	}
	f.Add([]byte("haproxy: {do_writes: false}\npanic_threshold: 50\nservices:\n  web:\n    discovery: {method: static, servers: [{host: 10.0.0.1, port: 80}]}\n    haproxy: {port: 3000}\n    panic_threshold: 0\n"), false)
	f.Add([]byte(`{"haproxy": {"do_writes": false}, "services": {"web": {"discovery": {"method": "static", "servers": [{"host": "10.0.0.1", "port": 80, "name": "a\nb"}]}, "haproxy": {"port": 3000}}}}`), true)
	f.Add([]byte("services: {a: {discovery: {method: zookeeper, hosts: [\"h:1\"], path: /x}, haproxy: {port: 1, listen: [\"mode http\\nlisten evil\"]}}}\nhaproxy: {}\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, json bool) {
		name := "synapse.yaml"
		if json {
			name = "synapse.conf.json"
		}
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the error does not name the file: %v", err)
			}
			return
		}
		if err := registry.ValidateName(cfg.ID); err != nil {
			t.Fatalf("id %q loaded: %v", cfg.ID, err)
		}
		for n, svc := range cfg.Services {
			if err := registry.ValidateName(n); err != nil {
				t.Fatalf("service %q loaded: %v", n, err)
			}
			if th := cfg.Threshold(n); th < 0 || th > 1 {
				t.Fatalf("service %s: threshold %v", n, th)
			}
			for _, d := range svc.DefaultServers {
				if err := d.Validate(); err != nil {
					t.Fatalf("default server %+v loaded: %v", d, err)
				}
			}
			if strings.ContainsAny(svc.HAProxy.BackendName, "\n\r\x00 ") {
				t.Fatalf("backend name %q loaded", svc.HAProxy.BackendName)
			}
		}
	})
}
