package synapse

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// What HAProxy itself says, for assertions that must not trust synapse's
// own metrics (a failed reload, or a restart, counts here too).

// haproxyReloads is the master's <reloads> count from `show proc`: every
// reload of this master, whoever asked for it and whether it worked.
func haproxyReloads(t *testing.T, master string) int {
	t.Helper()
	var out string
	var err error
	// The master refuses connections for a moment while it reloads.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if out, err = testserver.HAProxyCommand(master, "show proc"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("show proc: %v", err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "master" {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("show proc: master line %q", l)
			}
			return n
		}
	}
	t.Fatalf("show proc: no master line in %q", out)
	return 0
}

// haproxySnapshot is HAProxy's reload count and worker PID at one moment.
type haproxySnapshot struct{ reloads, pid int }

func (e *env) haproxyNow(t *testing.T) haproxySnapshot {
	t.Helper()
	return haproxySnapshot{haproxyReloads(t, e.master), testserver.HAProxyWorkerPID(t, e.master)}
}

// assertNoReloadSince checks that HAProxy has not reloaded since before:
// the same reload count and worker PID.
func (e *env) assertNoReloadSince(t *testing.T, before haproxySnapshot) {
	t.Helper()
	if now := e.haproxyNow(t); now != before {
		t.Errorf("HAProxy reloaded: reloads %d → %d, worker %d → %d", before.reloads, now.reloads, before.pid, now.pid)
	}
}

// noReloadWithin is a negative check, so it cannot wait for a condition:
// it watches HAProxy for d (bounded) and fails if its reload count or
// worker PID moves from before.
func (e *env) noReloadWithin(t *testing.T, d time.Duration, before haproxySnapshot) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if now := e.haproxyNow(t); now != before {
			t.Errorf("HAProxy reloaded within %v: reloads %d → %d, worker %d → %d", d, before.reloads, now.reloads, before.pid, now.pid)
			return
		}
	}
}

// sessions is HAProxy's current sessions (scur in `show stat`) on the
// server of backend whose name starts with prefix_.
func (e *env) sessions(t *testing.T, backend, prefix string) int {
	t.Helper()
	out, err := testserver.HAProxyCommand(e.stats, "show stat")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(l, ",")
		if len(f) > 4 && f[0] == backend && strings.HasPrefix(f[1], prefix+"_") {
			n, _ := strconv.Atoi(f[4])
			return n
		}
	}
	return 0
}

// holdRequest sends a request to h through the service's frontend and
// returns once it is in flight: h has it, and HAProxy counts it on the
// server. The channel gets the response body once h frees it.
func (e *env) holdRequest(t *testing.T, service string, h *testserver.HoldBackend) <-chan string {
	t.Helper()
	done := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(e.url(service) + "hold")
		if err != nil {
			done <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- string(b)
	}()
	select {
	case <-h.Entered:
	case got := <-done:
		t.Fatalf("the request ended before reaching the backend: %q", got)
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the backend")
	}
	registrytest.Eventually(t, 5*time.Second, "HAProxy counting the request on "+h.ID, func() bool {
		return e.sessions(t, service, h.ID) >= 1
	})
	return done
}

// serverOrder is the order of the server lines of backend in haproxy.cfg
// (their names' prefixes, before "_").
func (e *env) serverOrder(t *testing.T, backend string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.dir, "haproxy.cfg"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // not written yet
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if l[0] != ' ' && l[0] != '\t' {
			in = (f[0] == "backend" || f[0] == "listen") && len(f) > 1 && f[1] == backend
			continue
		}
		if in && f[0] == "server" && len(f) > 1 {
			name, _, _ := strings.Cut(f[1], "_")
			out = append(out, name)
		}
	}
	return out
}
