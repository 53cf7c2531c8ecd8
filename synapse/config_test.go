package synapse

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadConfig writes body (YAML) with two services a and b and loads it.
func loadConfig(t *testing.T, name, body string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

// Two services on one address and port would make HAProxy split the
// connections between them: a config error naming both, and the key.
func TestLoadRefusesSharedBind(t *testing.T) {
	cfg := func(defaultBind, a, b string) string {
		head := "haproxy:\n  do_writes: false\n  do_reloads: false\n  do_socket: false\n"
		if defaultBind != "" {
			head += "  bind_address: " + defaultBind + "\n"
		}
		return head + "services:\n" +
			"  a:\n    discovery: {method: static, servers: [{host: 10.0.0.1, port: 80}]}\n    haproxy: {" + a + "}\n" +
			"  b:\n    discovery: {method: static, servers: [{host: 10.0.0.2, port: 80}]}\n    haproxy: {" + b + "}\n"
	}
	for _, tc := range []struct {
		name              string
		defaultBind, a, b string
		conflict          bool
	}{
		{"same port, default address", "", "port: 3000", "port: 3000", true},
		{"same port and address", "", "port: 3000, bind_address: 10.1.1.1", "port: 3000, bind_address: 10.1.1.1", true},
		{"wildcard and the default", "", "port: 3000, bind_address: 0.0.0.0", "port: 3000", true},
		{"wildcard and an address", "", "port: 3000, bind_address: 10.1.1.1", "port: 3000, bind_address: '*'", true},
		{"ipv6 wildcard and ipv4", "", "port: 3000, bind_address: '[::]'", "port: 3000, bind_address: 10.1.1.1", true},
		{"localhost and 127.0.0.1", "", "port: 3000, bind_address: localhost", "port: 3000, bind_address: 127.0.0.1", true},
		{"default 0.0.0.0 and 127.0.0.1", "0.0.0.0", "port: 3000", "port: 3000, bind_address: 127.0.0.1", true},
		{"mapped and plain ipv4", "", "port: 3000, bind_address: '::ffff:10.1.1.1'", "port: 3000, bind_address: 10.1.1.1", true},
		{"same name", "", "port: 3000, bind_address: lb.example.com", "port: 3000, bind_address: LB.example.com.", true},

		{"different ports", "", "port: 3000", "port: 3001", false},
		{"different addresses", "", "port: 3000, bind_address: 10.1.1.1", "port: 3000, bind_address: 10.1.1.2", false},
		{"loopback and another address", "", "port: 3000, bind_address: 127.0.0.1", "port: 3000, bind_address: 10.1.1.1", false},
		{"no frontends", "", "port: 0", "port: 0", false},
		{"one disabled", "", "port: 3000", "port: 3000, disabled: true", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(t, "synapse.yaml", cfg(tc.defaultBind, tc.a, tc.b))
			if !tc.conflict {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted two services on one address and port")
			}
			for _, w := range []string{"services.b.haproxy.port", "service a", ":3000"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// A JSON config is JSON: a trailing comma is an error naming the file and
// the line, where YAML (which allows it in flow style) read it silently.
func TestLoadJSONIsStrict(t *testing.T) {
	body := `{
  "services": {
    "web": {
      "discovery": {"method": "static", "servers": [{"host": "10.0.0.1", "port": 80}]},
      "haproxy": {"port": 3000},
    }
  },
  "haproxy": {"do_writes": false, "do_reloads": false, "do_socket": false}
}`
	_, err := loadConfig(t, "synapse.conf.json", body)
	if err == nil || !strings.Contains(err.Error(), "synapse.conf.json: line 6, column 5: JSON syntax error") {
		t.Fatalf("Load = %v; want a JSON syntax error at line 6", err)
	}
	// The same file without the comma loads, and an unknown key is still
	// reported with its line.
	body = strings.Replace(body, `"port": 3000},`, `"port": 3000}`, 1)
	if _, err := loadConfig(t, "synapse.conf.json", body); err != nil {
		t.Fatalf("valid JSON refused: %v", err)
	}
	body = strings.Replace(body, `"haproxy": {"port": 3000}`, `"haproxy": {"port": 3000, "bogus": 1}`, 1)
	if _, err := loadConfig(t, "synapse.conf.json", body); err == nil || !strings.Contains(err.Error(), "line 5") || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown key: %v; want it named with line 5", err)
	}
}

// Airbnb's example config (testdata) loads.
func TestLoadAirbnbJSON(t *testing.T) {
	cfg, err := Load("testdata/airbnb/synapse.conf.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 2 {
		t.Errorf("%d services, want 2", len(cfg.Services))
	}
}

// The record allow-list is for records: the operator's server_options may
// name files, track servers or set a weight; default_servers are records.
func TestServerOptionsOperatorVersusRecord(t *testing.T) {
	head := "haproxy:\n  do_writes: false\n  do_reloads: false\n  do_socket: false\nservices:\n  web:\n    discovery: {method: static, servers: [{host: 10.0.0.1, port: 80}]}\n"
	operator := head + "    haproxy: {port: 3000, server_options: 'check ssl crt /etc/ssl/client.pem ca-file /etc/ssl/ca.pem track other/a weight 5 disabled'}\n"
	if _, err := loadConfig(t, "synapse.yaml", operator); err != nil {
		t.Errorf("operator server_options refused: %v", err)
	}
	record := head + "    haproxy: {port: 3000}\n    default_servers: [{host: 10.0.0.9, port: 80, haproxy_server_options: 'ssl crt /etc/shadow'}]\n"
	if _, err := loadConfig(t, "synapse.yaml", record); err == nil || !strings.Contains(err.Error(), `services.web.default_servers[0]`) || !strings.Contains(err.Error(), `"crt" is not allowed in a record`) {
		t.Errorf("default server with crt: %v; want it refused as a record", err)
	}
}
