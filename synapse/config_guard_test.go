package synapse

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/syncstack/syncstack/internal/testserver"
)

const guardHead = "haproxy:\n  do_writes: false\n  do_reloads: false\n  do_socket: false\n"

func guardService(extra string) string {
	return "services:\n  web:\n    discovery: {method: static, servers: [{host: 10.0.0.1, port: 80}]}\n    haproxy: {port: 3000}\n" + extra
}

// panic_threshold: a share in 0..100, globally and per service; the
// service's wins; JSON (Airbnb-style) configs take the same keys.
func TestLoadPanicThreshold(t *testing.T) {
	cfg, err := loadConfig(t, "s.yaml", guardHead+"panic_threshold: 30\npanic_window: 5s\n"+guardService("    panic_threshold: 0\n")+
		"  api:\n    discovery: {method: static, servers: [{host: 10.0.0.1, port: 80}]}\n    haproxy: {port: 3001}\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Threshold("web") != 0 || cfg.Threshold("api") != 0.3 || cfg.Window().Seconds() != 5 {
		t.Errorf("web %v api %v window %v", cfg.Threshold("web"), cfg.Threshold("api"), cfg.Window())
	}
	for _, bad := range []string{"panic_threshold: 101\n", "panic_threshold: -1\n", "panic_threshold: .nan\n"} {
		if _, err := loadConfig(t, "s.yaml", guardHead+bad+guardService("")); err == nil || !strings.Contains(err.Error(), "panic_threshold") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if _, err := loadConfig(t, "s.yaml", guardHead+guardService("    panic_threshold: 200\n")); err == nil || !strings.Contains(err.Error(), "services.web.panic_threshold") {
		t.Errorf("service threshold 200: %v", err)
	}
	js := `{"haproxy": {"do_writes": false, "do_reloads": false, "do_socket": false}, "panic_threshold": 20,
 "services": {"web": {"discovery": {"method": "static", "servers": [{"host": "10.0.0.1", "port": 80}]}, "haproxy": {"port": 3000}, "panic_threshold": 40}}}`
	cfg, err = loadConfig(t, "s.json", js)
	if err != nil || cfg.Threshold("web") != 0.4 {
		t.Errorf("JSON: %v %v", cfg, err)
	}
}

// A password or key file others can read is refused at load, naming the
// key and the file; at 0600 it loads.
func TestLoadRefusesExposedCredentialFile(t *testing.T) {
	pki := testserver.NewPKI(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("secret"), 0o600)
	body := func() string {
		return guardHead + fmt.Sprintf("etcd_security: {ca_file: %s, cert_file: %s, key_file: %s, username: synapse, password_file: %s}\n", pki.CA, pki.ClientCert, pki.ClientKey, pw) + guardService("")
	}
	if _, err := loadConfig(t, "s.yaml", body()); err != nil {
		t.Fatalf("0600 files: %v", err)
	}
	os.Chmod(pw, 0o644)
	_, err := loadConfig(t, "s.yaml", body())
	if err == nil || !strings.Contains(err.Error(), "etcd_security.password_file") || !strings.Contains(err.Error(), pw) {
		t.Errorf("a world-readable password file: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "secret") {
		t.Errorf("the error shows the secret: %v", err)
	}
	os.Chmod(pw, 0o600)
	os.Chmod(pki.ClientKey, 0o604)
	t.Cleanup(func() { os.Chmod(pki.ClientKey, 0o600) })
	if _, err := loadConfig(t, "s.yaml", body()); err == nil || !strings.Contains(err.Error(), "etcd_security.key_file") || !strings.Contains(err.Error(), pki.ClientKey) {
		t.Errorf("a key others can read: %v", err)
	}
}

// /debug/pprof/ is served only with admin.pprof set.
func TestAdminPprofOnlyWhenConfigured(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg, err := loadConfig(t, "s.yaml", guardHead+fmt.Sprintf("admin: {listen: \"off\", pprof: %v}\n", on)+guardService(""))
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		h := s.AdminHandler(prometheus.NewRegistry())
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if got := rec.Code == http.StatusOK; got != on {
				t.Errorf("pprof %v: GET %s: %d", on, path, rec.Code)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("pprof %v: /status %d", on, rec.Code)
		}
	}
}
