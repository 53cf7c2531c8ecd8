package e2e

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// upgrade: the synapse binary is replaced (as a package upgrade does: a new
// file renamed over the old) and synapse restarted next to the running
// HAProxy, under load: HAProxy is not reloaded (its worker PID, read from
// its master) and no request fails. Then a nerve is restarted for its
// upgrade: it deregisters on SIGTERM (HAProxy stops sending it new
// requests), the new one registers once its checks rise — drained and
// re-added on purpose, with no failed request.
func upgrade(t *testing.T, f *fleet) {
	f.t = t
	pid := f.workerPID()
	l := startLoad(f)

	replaceBinary(t, filepath.Join(binDir, "synapse"))
	f.synapse.stop()
	if !testserver.Alive(pid) {
		t.Fatal("stopping synapse stopped HAProxy")
	}
	f.startSynapse()
	f.waitAck(30 * time.Second)
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 10*time.Second)
	if p := f.workerPID(); p != pid {
		t.Errorf("synapse upgrade reloaded HAProxy: worker %d → %d", pid, p)
	}
	if m := f.metric("synapse_haproxy_reloads_total"); strings.Contains(m, "} 1") || strings.Contains(m, " 1\n") {
		t.Errorf("the new synapse counts reloads: %s", m)
	}

	// nerve b: SIGTERM → deregistered → HAProxy removes b; the new nerve
	// registers it again.
	replaceBinary(t, filepath.Join(binDir, "nerve"))
	out := time.Now()
	f.nerves["b"].stop()
	// Out of traffic: gone, or in maint while HAProxy still holds
	// connections to it (del server waits for them).
	registrytest.Eventually(t, 10*time.Second, "b out of HAProxy's traffic", func() bool {
		got, err := testserver.TryHAProxyServers(f.stats(), "web")
		for name, s := range got {
			if strings.HasPrefix(name, "b_") {
				return err == nil && s.Admin&1 != 0
			}
		}
		return err == nil && len(got) == 2
	})
	f.startNerve("b")
	f.waitServers(map[string]int{"a": 0, "b": 0, "c": 0}, 30*time.Second)
	t.Logf("nerve restart: b out of HAProxy for %v (deregistered at stop, registered after rise 2 × 200 ms checks)", time.Since(out).Round(10*time.Millisecond))
	if p := f.workerPID(); p != pid {
		t.Errorf("nerve restart reloaded HAProxy: worker %d → %d", pid, p)
	}
	if ok, failed := l.finish(t, "upgrades"); failed != 0 || ok == 0 {
		t.Errorf("%d failed requests (%d ok): %v", failed, ok, l.Failures())
	}
}

// replaceBinary puts a new copy of path in its place by rename, as dpkg
// does: the running process keeps the old inode.
func replaceBinary(t *testing.T, path string) {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := path + ".dpkg-new"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
