package haproxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/syncstack/syncstack/generators"
)

// Airbnb's synapse copies into the frontend and the backend only the
// listen lines each section can take (its SECTION_FIELDS); syncstack
// copies them all and relies on HAProxy ignoring, with a warning, a line
// its section cannot take. This holds the README's claim that the effect
// is the same: the rendered config is valid and each misplaced line is
// ignored, not fatal.
func TestListenLinesASectionCannotTakeAreIgnored(t *testing.T) {
	listen := []string{
		"mode http",
		"balance roundrobin", "cookie SRV insert indirect nocache", "option httpchk GET /health",
		"http-check expect status 200", "timeout server 2s", // backend only
		"capture request header Host len 32", "monitor-uri /_up", "option httplog", "maxconn 100", // frontend only
	}
	g := renderOnly(t, []string{"timeout connect 1s", "timeout client 1s", "timeout server 1s"}, 1, &ServiceConfig{Port: 3000, Frontend: []string{"timeout client 2s"}, Listen: listen})
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	st := generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: hostBackends("a", "b")}})}
	g.assignIDs(st)
	if err := os.WriteFile(path, []byte(g.render(st, true)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("haproxy", "-c", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c refused the config with every listen line copied: %v\n%s", err, out)
	}
	for _, kw := range []string{"'balance'", "'cookie'", "'httpchk'", "'http-check'", "'timeout server'", "'capture'", "'monitor-uri'", "'option httplog'", "'maxconn'"} {
		if !strings.Contains(string(out), kw) {
			t.Errorf("HAProxy did not say it ignores %s in the section that cannot take it:\n%s", kw, out)
		}
	}
}
