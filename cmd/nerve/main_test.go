package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

var nerveBin string

func TestMain(m *testing.M) { testserver.MainWithBinary(m, "nerve", &nerveBin) }

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeConfig(t, good, "instance_id: h\nservices:\n  web:\n    host: 127.0.0.1\n    port: 80\n    checks: [{type: tcp}]\n    zk_hosts: [127.0.0.1:2181]\n    zk_path: /s\n")
	trailingComma := filepath.Join(dir, "nerve.conf.json")
	writeConfig(t, trailingComma, "{\n  \"instance_id\": \"h\",\n  \"services\": {},\n}\n")
	fileOption := filepath.Join(dir, "crt.yaml")
	writeConfig(t, fileOption, "instance_id: h\nservices:\n  web:\n    host: 127.0.0.1\n    port: 80\n    haproxy_server_options: ssl crt /etc/shadow\n    checks: [{type: tcp}]\n    zk_hosts: [127.0.0.1:2181]\n    zk_path: /s\n")
	bad := filepath.Join(dir, "bad.yaml")
	writeConfig(t, bad, "instance_id: h\nservices:\n  web:\n    host: 127.0.0.1\n    port: 80\n    chekcs: [{type: tcp}]\n")
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"-config", good, "-check-config"}, 0, []string{"OK, 1 services"}},
		{[]string{"-config", bad, "-check-config"}, 1, []string{bad, "line 6", "chekcs"}},
		{[]string{"-config", bad}, 1, []string{bad, "chekcs"}},
		{[]string{"-config", "../../nerve/testdata/airbnb/nerve.conf.json", "-check-config"}, 0, []string{"OK, 4 services", "statsd: not implemented"}},
		{[]string{"-config", "../../nerve/testdata/rabbitmq.conf.json", "-check-config"}, 0, []string{"OK, 1 services"}},
		{[]string{"-bogus"}, 2, []string{"bogus", "Usage: nerve"}},
		{[]string{"-h"}, 0, []string{"Usage: nerve", "-check-config"}},
		{[]string{"--help"}, 0, []string{"Usage: nerve"}},
		{[]string{"--version"}, 0, []string{"nerve ", "(commit ", "go1."}},
		// A .json config is JSON: a trailing comma is a syntax error with
		// the file and line (YAML read it silently).
		{[]string{"-config", trailingComma, "-check-config"}, 1, []string{trailingComma + ": line 4, column 1: JSON syntax error"}},
		// A record may not name files; nerve writes records.
		{[]string{"-config", fileOption, "-check-config"}, 1, []string{"services.web", `"crt" is not allowed in a record`}},
	} {
		var out bytes.Buffer
		cmd := exec.Command(nerveBin, tc.args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code {
			t.Errorf("nerve %v: exit %d, want %d\n%s", tc.args, code, tc.code, out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("nerve %v: output lacks %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}

// Airbnb's example nerve.conf.json, verbatim (rabbitmq check included), in
// Airbnb's repository layout (testdata/airbnb/example) and run from the
// repository's root as Airbnb's docs do: its service_conf_dir
// "example/nerve_services" is found relative to the working directory,
// and the warning says so.
func TestAirbnbExampleConfig(t *testing.T) {
	var out bytes.Buffer
	cmd := exec.Command(nerveBin, "-config", "example/nerve.conf.json", "-check-config")
	cmd.Dir = "testdata/airbnb"
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("nerve -check-config on Airbnb's example: %v\n%s", err, out.String())
	}
	for _, w := range []string{"OK, 5 services", `service_conf_dir: \"example/nerve_services\" is not next to the config`, "relative to the working directory"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
}

func freeAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
}

// The binary: register, SIGHUP add and remove, SIGTERM deregisters all and
// exits 0 after the drain delay.
func TestSignals(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	ln1, _ := net.Listen("tcp", "127.0.0.1:0")
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	t.Cleanup(func() { ln1.Close(); ln2.Close() })
	port := func(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }
	admin := freeAddr(t)
	svc := func(name string, p int) string {
		return fmt.Sprintf("  %s:\n    host: 127.0.0.1\n    port: %d\n    check_interval: 50ms\n    rise: 1\n    fall: 1\n    checks: [{type: tcp}]\n    zk_hosts: [%s]\n    zk_path: /services/%s\n", name, p, zks.Nodes[0].Addr, name)
	}
	head := fmt.Sprintf("instance_id: host-1\ndrain_delay: 700ms\nadmin: {listen: %s}\nservices:\n", admin)
	cfgPath := filepath.Join(t.TempDir(), "nerve.yaml")
	writeConfig(t, cfgPath, head+svc("a", port(ln1)))

	var logs testserver.LockedBuffer
	cmd := exec.Command(nerveBin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	zc, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zc.Close() })
	wa := registrytest.StartWatch(t, zc, "/services/a")
	wb := registrytest.StartWatch(t, zc, "/services/b")
	wa.WaitFor(t, 10*time.Second, "a registered", registrytest.HasLen(1))
	wb.WaitFor(t, 10*time.Second, "no b", registrytest.HasLen(0))

	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"state": "up"`) {
		t.Errorf("/status: %s", body)
	}

	// An invalid config on SIGHUP keeps the old one.
	writeConfig(t, cfgPath, head+svc("a", port(ln1))+"    bogus: 1\n")
	cmd.Process.Signal(syscall.SIGHUP)
	wa.Quiet(t, 500*time.Millisecond, "after an invalid config")
	if !strings.Contains(logs.String(), "keeping the old one") {
		t.Errorf("no log line about the invalid config:\n%s", logs.String())
	}

	writeConfig(t, cfgPath, head+svc("b", port(ln2)))
	cmd.Process.Signal(syscall.SIGHUP)
	wb.WaitFor(t, 10*time.Second, "b added by SIGHUP", registrytest.HasLen(1))
	wa.WaitFor(t, 10*time.Second, "a removed by SIGHUP", registrytest.HasLen(0))

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	wb.WaitFor(t, 5*time.Second, "b deregistered at SIGTERM", registrytest.HasLen(0))
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("exit: %v\n%s", err, logs.String())
		}
		if d := time.Since(start); d < 700*time.Millisecond {
			t.Errorf("exited %v after SIGTERM, before the 700ms drain delay", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nerve did not exit after SIGTERM")
	}
}
