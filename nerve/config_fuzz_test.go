package nerve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syncstack/syncstack/registry"
)

// FuzzLoadConfig: whatever the config file holds (YAML, or JSON as
// Airbnb's nerve.conf.json), Load never panics; it refuses with an error
// naming the file, or every service it returns registers a record that
// passes the registry's validation (what synapse will accept) and encodes.
func FuzzLoadConfig(f *testing.F) {
	for _, seed := range []string{"testdata/airbnb/nerve.conf.json", "testdata/rabbitmq.conf.json", "../configs/nerve.yaml"} {
		data, err := os.ReadFile(seed)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, strings.HasSuffix(seed, ".json"))
	}
	f.Add([]byte("instance_id: i-1\nservices:\n  web:\n    host: 10.0.0.1\n    port: 80\n    zk_hosts: [\"127.0.0.1:2181\"]\n    zk_path: /services/web\n    checks: [{type: tcp}]\n"), false)
	f.Add([]byte(`{"instance_id": "i-1", "services": {"web": {"host": "10.0.0.1\nserver evil", "port": 80, "zk_hosts": ["h:1"], "zk_path": "/s", "checks": [{"type": "tcp"}]}}}`), true)
	f.Add([]byte("instance_id: i-1\nservices:\n  web: {host: 10.0.0.1, port: 80, haproxy_server_options: \"check # x\", zk_hosts: [h], zk_path: /s, checks: [{type: http, uri: /}]}\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, json bool) {
		name := "nerve.yaml"
		if json {
			name = "nerve.conf.json"
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
		for n, svc := range cfg.Services {
			if err := registry.ValidateName(n); err != nil {
				t.Fatalf("service %q loaded: %v", n, err)
			}
			rec, err := svc.Instance().Encode()
			if err != nil {
				t.Fatalf("service %s: its record does not encode: %v", n, err)
			}
			if _, err := registry.Decode(rec, registry.DecodeOptions{}); err != nil {
				t.Fatalf("service %s: synapse would refuse its record %s: %v", n, rec, err)
			}
			if !strings.HasPrefix(svc.RegistryPath(), "/") {
				t.Fatalf("service %s: registry path %q", n, svc.RegistryPath())
			}
		}
	})
}
