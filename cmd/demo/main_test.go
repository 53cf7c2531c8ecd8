package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/syncstack/syncstack/internal/testserver"
)

// The demo, as `make demo` runs it, in check mode: every binary built,
// etcd embedded, three nerves, synapse, HAProxy; a drain and an add-to-lb
// through synctl with no reload.
func TestDemoCheck(t *testing.T) {
	testserver.CheckHAProxy(t)
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", bin+"/", "../...").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	port, etcdPort := testserver.FreePort(t), testserver.FreePort(t)
	cmd := exec.Command(filepath.Join(bin, "demo"), "-check", "-port", fmt.Sprint(port), "-etcd-port", fmt.Sprint(etcdPort))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo -check: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
