package main

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
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
	// etcd's default port taken (by this test, or by whatever else holds
	// it): the demo picks another instead of failing.
	if ln, err := net.Listen("tcp", "127.0.0.1:2379"); err == nil {
		t.Cleanup(func() { ln.Close() })
	}
	port := testserver.FreePort(t)
	cmd := exec.Command(filepath.Join(bin, "demo"), "-check", "-port", fmt.Sprint(port), "-page-port", fmt.Sprint(testserver.FreePort(t)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo -check: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	// A port the user chose that is busy is refused, naming the flag.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	out, err = exec.Command(filepath.Join(bin, "demo"), "-check", "-port", fmt.Sprint(busy)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "choose another with -port") {
		t.Errorf("demo on a busy -port: %v\n%s", err, out)
	}
}
