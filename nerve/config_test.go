package nerve

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadAirbnbJSON(t *testing.T) {
	cfg, err := Load("testdata/airbnb/nerve.conf.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 4 {
		t.Fatalf("services = %d, want 4 (2 inline, 2 from service_conf_dir)", len(cfg.Services))
	}
	web := cfg.Services["your_http_service"]
	if web.InstanceID != "mymachine" || web.ReporterType != "zookeeper" || web.CheckInterval.D() != 2*time.Second ||
		web.Rise != 3 || web.Fall != 2 || web.Checks[0].Timeout.D() != 200*time.Millisecond {
		t.Errorf("your_http_service = %+v", web)
	}
	e := cfg.Services["etcd_service1"]
	if e.ReporterType != "etcd" || len(e.EtcdEndpoints) != 1 || e.EtcdEndpoints[0] != "localhost:4001" || *e.Weight != 2 {
		t.Errorf("etcd_service1 = %+v", e)
	}
	want := []string{"statsd", "max_repeated_report_failures"}
	for _, w := range want {
		found := false
		for _, got := range cfg.Warnings {
			found = found || strings.HasPrefix(got, w+":")
		}
		if !found {
			t.Errorf("no warning for %s in %q", w, cfg.Warnings)
		}
	}
}

func TestLoadExampleYAML(t *testing.T) {
	cfg, err := Load("../configs/nerve.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 3 || len(cfg.Warnings) != 0 || cfg.DrainDelay.D() != 5*time.Second {
		t.Fatalf("config = %+v", cfg)
	}
	if c := cfg.Services["cache"]; c.ReporterType != "etcd" || c.Rise != DefaultRise || c.CheckInterval.D() != DefaultCheckInterval {
		t.Errorf("cache defaults = %+v", c)
	}
}

func TestLoadErrorsNameFileAndKey(t *testing.T) {
	dir := t.TempDir()
	base := `instance_id: h1
services:
  web:
    host: 10.0.0.5
    port: 8080
    checks: [{type: tcp}]
    zk_hosts: [127.0.0.1:2181]
    zk_path: /services/web
`
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", base + "    zk_pth: /x\n", []string{"line 9", "zk_pth"}},
		{"unknown top key", "bogus: 1\n" + base, []string{"line 1", "bogus"}},
		{"bad port", strings.Replace(base, "8080", "70000", 1), []string{"services.web", "port"}},
		{"bad type", strings.Replace(base, "port: 8080", "port: eighty", 1), []string{"line 5", "eighty"}},
		{"bad duration", base + "    check_interval: soon\n", []string{"line 9", "soon"}},
		{"unsupported check", strings.Replace(base, "type: tcp", "type: mysql", 1), []string{"services.web.checks[0]", "mysql"}},
		{"plugin without path", strings.Replace(base, "type: tcp", "type: plugin, config: {x: y}", 1), []string{"services.web.checks[0]", "plugin: missing"}},
		{"plugin bad checksum", strings.Replace(base, "type: tcp", "type: plugin, plugin: /bin/x, plugin_sha256: abc", 1), []string{"services.web.checks[0]", "plugin_sha256"}},
		{"plugin keys on tcp", strings.Replace(base, "type: tcp", "type: tcp, plugin: /bin/x", 1), []string{"services.web.checks[0]", "only for type plugin"}},
		{"etcd security", base + "etcd_security: {ca_file: /nonexistent/ca.pem}\n", []string{"etcd_security", "ca_file", "/nonexistent/ca.pem"}},
		{"etcd security half a key pair", base + "etcd_security: {cert_file: /a.pem}\n", []string{"etcd_security", "cert_file and key_file"}},
		{"no checks", strings.Replace(base, "    checks: [{type: tcp}]\n", "", 1), []string{"services.web.checks"}},
		{"no registry", strings.Replace(strings.Replace(base, "    zk_hosts: [127.0.0.1:2181]\n", "", 1), "    zk_path: /services/web\n", "", 1), []string{"services.web.reporter_type"}},
		{"relative path", strings.Replace(base, "zk_path: /services/web", "zk_path: services/web", 1), []string{"services.web.zk_path"}},
		{"injection", strings.Replace(base, "port: 8080", "port: 8080\n    haproxy_server_options: \"check\\nserver evil 1.2.3.4:80\"", 1), []string{"services.web", "haproxy_server_options"}},
		{"no instance id", strings.Replace(base, "instance_id: h1\n", "", 1), []string{"services.web.instance_id"}},
		{"bad service name", strings.Replace(base, "  web:", "  \"web app\":", 1), []string{"services.web app", "service name"}},
		{"admin listen", base + "admin: {listen: nowhere}\n", []string{"admin.listen"}},
		{"empty", "", []string{"empty config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.body)
			_, err := Load(p)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range append([]string{p}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// Airbnb's rabbitmq check loads (it is implemented).
	if _, err := Load("testdata/rabbitmq.conf.json"); err != nil {
		t.Errorf("rabbitmq check: %v", err)
	}
	_, err := Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestServiceConfDirConflicts(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "svcs"), 0o755)
	svc := `{"host":"10.0.0.5","port":80,"zk_hosts":["127.0.0.1:2181"],"zk_path":"/s","checks":[{"type":"tcp"}]}`
	writeFile(t, filepath.Join(dir, "svcs"), "web.json", svc)
	main := writeFile(t, dir, "nerve.json", `{"instance_id":"h","service_conf_dir":"svcs","services":{"web":`+svc+`}}`)
	if _, err := Load(main); err == nil || !strings.Contains(err.Error(), "web.json") {
		t.Errorf("duplicate service: %v", err)
	}
	writeFile(t, filepath.Join(dir, "svcs"), "web.json", `{"host":"10.0.0.5","port":80,"bogus":1}`)
	main = writeFile(t, dir, "nerve.json", `{"instance_id":"h","service_conf_dir":"svcs"}`)
	if _, err := Load(main); err == nil || !strings.Contains(err.Error(), "web.json") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("bad service file: %v", err)
	}
}
