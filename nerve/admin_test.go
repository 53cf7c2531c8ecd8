package nerve

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syncstack/syncstack/internal/testserver"
)

// The admin API takes this host out of every load balancer: a web page a
// browser on this host opens (a cross-site POST, DNS rebinding) must not
// reach it, and off loopback only the token holder may.
func TestAdminAPIRefusesCrossSiteAndStrangers(t *testing.T) {
	srv := testserver.StartEtcd(t)
	b := startBackend(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("s3cret-token\n"), 0o600)
	base := `instance_id: host-1
services:
  api:
    host: 127.0.0.1
    port: {{.Port}}
    check_interval: 50ms
    rise: 1
    fall: 1
    checks: [{type: tcp}]
    etcd_endpoints: [{{.Etcd}}]
    etcd_path: /services/api
`
	cfg := loadConfig(t, base, map[string]any{"Port": b.port, "Etcd": srv.Endpoint})
	h := startAgent(t, cfg)
	api := httptest.NewServer(h.agent.AdminHandler(prometheus.NewRegistry()))
	t.Cleanup(api.Close)
	do := func(method, path, body string, header map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest(method, api.URL+path, strings.NewReader(body))
		for k, v := range header {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	json := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		want         int
	}{
		// The attack reported: a page on attacker.example POSTs text/plain.
		{"cross-site POST", "POST", "/services/api/maintenance", `{"reason":"x"}`, map[string]string{"Origin": "http://attacker.example", "Content-Type": "text/plain"}, http.StatusForbidden},
		{"cross-site JSON PUT", "PUT", "/services/api/weight", `{"weight":256}`, map[string]string{"Origin": "http://attacker.example", "Content-Type": "application/json"}, http.StatusForbidden},
		{"form POST without Origin", "POST", "/services/api/maintenance", `reason=x`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"text/plain POST", "POST", "/services/api/maintenance", `{"reason":"x"}`, map[string]string{"Content-Type": "text/plain"}, http.StatusUnsupportedMediaType},
		{"DNS rebinding", "GET", "/status", "", map[string]string{"Host": "attacker.example:" + strings.Split(api.URL, ":")[2]}, http.StatusForbidden},
		{"pprof off by default", "GET", "/debug/pprof/", "", nil, http.StatusNotFound},
		{"status", "GET", "/status", "", nil, http.StatusOK},
		{"same-origin JSON PUT", "PUT", "/services/api/weight", `{"weight":7}`, map[string]string{"Origin": api.URL, "Content-Type": "application/json"}, http.StatusOK},
		{"localhost Host", "PUT", "/services/api/weight", `{"weight":null}`, map[string]string{"Host": "localhost:" + strings.Split(api.URL, ":")[2], "Content-Type": "application/json"}, http.StatusOK},
		{"JSON POST", "POST", "/services/api/maintenance", `{"reason":"ok"}`, json, http.StatusOK},
	} {
		if got := do(tc.method, tc.path, tc.body, tc.header); got != tc.want {
			t.Errorf("%s: %s %s = %d, want %d", tc.name, tc.method, tc.path, got, tc.want)
		}
	}
	if st := h.agent.Status(); st[0].Weight != nil || st[0].Maintenance == nil || st[0].Maintenance.Reason != "ok" {
		t.Errorf("only the admitted requests may change state: %+v", st[0])
	}

	// With a token: every request but /healthz carries it.
	h.agent.mu.Lock()
	h.agent.cfg.Admin.token = "s3cret-token"
	h.agent.mu.Unlock()
	if got := do("DELETE", "/services/api/maintenance", "", nil); got != http.StatusUnauthorized {
		t.Errorf("no token: %d", got)
	}
	if got := do("DELETE", "/services/api/maintenance", "", map[string]string{"Authorization": "Bearer wrong"}); got != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", got)
	}
	if got := do("DELETE", "/services/api/maintenance", "", map[string]string{"Authorization": "Bearer s3cret-token"}); got != http.StatusOK {
		t.Errorf("right token: %d", got)
	}
	if got := do("GET", "/healthz", "", nil); got != http.StatusOK {
		t.Errorf("healthz without a token: %d", got)
	}
}

// Off loopback the API needs a token file, readable by nerve alone.
func TestAdminTokenRequiredOffLoopback(t *testing.T) {
	dir := t.TempDir()
	exposed := filepath.Join(dir, "exposed")
	os.WriteFile(exposed, []byte("t\n"), 0o644)
	os.Chmod(exposed, 0o644)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("t\n"), 0o600)
	base := "instance_id: h\nservices:\n  web:\n    host: 127.0.0.1\n    port: 80\n    checks: [{type: tcp}]\n    zk_hosts: [127.0.0.1:2181]\n    zk_path: /s\n"
	for _, tc := range []struct {
		admin, want string
	}{
		{"admin: {listen: 0.0.0.0:9292}\n", "admin.token_file: required when admin.listen (0.0.0.0:9292) is not a loopback address"},
		{"admin: {listen: 0.0.0.0:9292, token_file: " + exposed + "}\n", "readable or writable by others"},
		{"admin: {listen: 0.0.0.0:9292, token_file: " + good + "}\n", ""},
		{"admin: {listen: \"[::1]:9292\"}\n", ""},
	} {
		p := filepath.Join(dir, "nerve.yaml")
		os.WriteFile(p, []byte(base+tc.admin), 0o644)
		_, err := Load(p)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s→ %v, want %q", tc.admin, err, tc.want)
		}
	}
}
