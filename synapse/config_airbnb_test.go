package synapse

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const airbnbHAProxy = `"haproxy": {"do_writes": false, "do_reloads": false, "do_socket": false%s}`

func airbnbJSON(haproxyExtra, serviceExtra string) string {
	return `{"services": {"web": {"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/services/web"},
  "haproxy": {"port": 3000` + serviceExtra + `}}}, ` + strings.Replace(airbnbHAProxy, "%s", haproxyExtra, 1) + `}`
}

// Airbnb's keys that were refused ("field not found") load with Airbnb's
// meaning; use_nerve_weights defaults off for Airbnb's JSON format, on for
// syncstack's YAML.
func TestAirbnbKeysLoad(t *testing.T) {
	for _, tc := range []struct {
		name, file, body string
		weights          bool
		err              string
	}{
		{"json default", "synapse.conf.json", airbnbJSON("", ""), false, ""},
		{"json on", "synapse.conf.json", airbnbJSON(`, "use_nerve_weights": true`, ""), true, ""},
		{"yaml default", "synapse.yaml", "haproxy: {do_writes: false, do_reloads: false, do_socket: false}\nservices:\n  web:\n    discovery: {method: zookeeper, hosts: [127.0.0.1:2181], path: /services/web}\n    haproxy: {port: 3000}\n", true, ""},
		{"yaml off", "synapse.yaml", "haproxy: {use_nerve_weights: false, do_writes: false, do_reloads: false, do_socket: false}\nservices:\n  web:\n    discovery: {method: zookeeper, hosts: [127.0.0.1:2181], path: /services/web}\n    haproxy: {port: 3000}\n", false, ""},
		{"every key", "synapse.conf.json", airbnbJSON(`, "server_order_seed": 7, "max_server_id": 100`, `, "backend_order": "desc", "cookie_value_method": "hash"`), false, ""},
		{"bad order", "synapse.conf.json", airbnbJSON("", `, "backend_order": "random"`), false, "services.web.haproxy.backend_order"},
		{"bad cookie method", "synapse.conf.json", airbnbJSON("", `, "cookie_value_method": "md5"`), false, "services.web.haproxy.cookie_value_method"},
		{"discovery_multi", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"discovery_multi": {"resolver": {"method": "union"}, "watchers": {"etcd": {"method": "etcd", "hosts": ["127.0.0.1:2379"], "path": "/services/web"}}}, "haproxy": {"port": 3000`, 1), false, ""},
		{"leader_election off", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": false, "haproxy": {"port": 3000`, 1), false, ""},
		{"leader_election on zookeeper", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": true, "haproxy": {"port": 3000`, 1), false, ""},
		{"leader_election on a sequential multi of zookeeper and etcd", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": true, "discovery_multi": {"resolver": {"method": "sequential"}, "watchers": {"etcd": {"method": "etcd", "hosts": ["127.0.0.1:2379"], "path": "/services/web"}}}, "haproxy": {"port": 3000`, 1), false, ""},
		{"leader_election on a union of one cluster", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": true, "discovery_multi": {"resolver": {"method": "union"}, "watchers": {"other": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/services/web2"}}}, "haproxy": {"port": 3000`, 1), false, ""},
		{"leader_election on a union of zookeeper and etcd: orders do not compare", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": true, "discovery_multi": {"resolver": {"method": "union"}, "watchers": {"etcd": {"method": "etcd", "hosts": ["127.0.0.1:2379"], "path": "/services/web"}}}, "haproxy": {"port": 3000`, 1), false, "services.web.leader_election: with the union resolver every watcher must be on the same registry cluster"},
		{"leader_election on dns: no registration order", "synapse.conf.json", strings.Replace(strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": true, "haproxy": {"port": 3000`, 1), `{"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/services/web"}`, `{"method": "dns", "servers": [{"host": "localhost", "port": 80}]}`, 1), false, `services.web.leader_election: needs the registration order, which only zookeeper and etcd discovery give ("dns" gives none)`},
		{"leader_election on a multi with a file child", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"leader_election": true, "discovery_multi": {"resolver": {"method": "union"}, "watchers": {"f": {"method": "file", "path": "/tmp/web.json"}}}, "haproxy": {"port": 3000`, 1), false, `services.web.leader_election: needs the registration order, which only zookeeper and etcd discovery give ("file" gives none)`},
		{"discovery_multi bad", "synapse.conf.json", strings.Replace(airbnbJSON("", ""), `"haproxy": {"port": 3000`, `"discovery_multi": {"resolver": {"method": "s3_toggle"}, "watchers": {"etcd": {"method": "etcd", "hosts": ["127.0.0.1:2379"], "path": "/services/web"}}}, "haproxy": {"port": 3000`, 1), false, "services.web.discovery_multi.resolver.method"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(t, tc.file, tc.body)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.RecordWeights(); got != tc.weights {
				t.Errorf("RecordWeights = %v, want %v", got, tc.weights)
			}
		})
	}
}

// service_conf_dir: next to the config first, then (Airbnb's way) the
// working directory; a warning says when the second was used, or when
// both exist.
func TestServiceConfDirResolution(t *testing.T) {
	root := t.TempDir()
	svc := `{"discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/services/%s"}, "haproxy": {"port": %d}}`
	write := func(path, body string) {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	main := `{"service_conf_dir": "services", ` + strings.Replace(airbnbHAProxy, "%s", "", 1) + `}`
	write(filepath.Join(root, "config/synapse.conf.json"), main)
	write(filepath.Join(root, "services/cwd.json"), strings.Replace(strings.Replace(svc, "%s", "cwd", 1), "%d", "3001", 1))
	t.Chdir(root)

	cfg, err := Load("config/synapse.conf.json")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Services["cwd"] == nil || !strings.Contains(strings.Join(cfg.Warnings, "\n"), "relative to the working directory") {
		t.Errorf("working directory: services %v, warnings %q", cfg.Services, cfg.Warnings)
	}

	write(filepath.Join(root, "config/services/next.json"), strings.Replace(strings.Replace(svc, "%s", "next", 1), "%d", "3002", 1))
	cfg, err = Load("config/synapse.conf.json")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Services["next"] == nil || cfg.Services["cwd"] != nil || !strings.Contains(strings.Join(cfg.Warnings, "\n"), "both next to the config") {
		t.Errorf("both: services %v, warnings %q", cfg.Services, cfg.Warnings)
	}

	os.RemoveAll(filepath.Join(root, "services"))
	os.RemoveAll(filepath.Join(root, "config/services"))
	if _, err := Load("config/synapse.conf.json"); err == nil || !strings.Contains(err.Error(), "service_conf_dir") {
		t.Errorf("neither: %v", err)
	}
}
