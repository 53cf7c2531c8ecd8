package main

import (
	"bytes"
	"context"
	"fmt"
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

var synapseBin string

func TestMain(m *testing.M) { testserver.MainWithBinary(m, "synapse", &synapseBin) }

func runSynapse(args ...string) (int, string) {
	var out bytes.Buffer
	cmd := exec.Command(synapseBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	return 0, out.String()
}

func TestCheckConfig(t *testing.T) {
	testserver.CheckHAProxy(t)
	dir := t.TempDir()
	base := func(extra string) string {
		return fmt.Sprintf(`haproxy:
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  defaults: [mode http, timeout connect 1s, timeout client 5s, timeout server 5s]
services:
  web:
    discovery: {method: zookeeper, hosts: [127.0.0.1:2181], path: /services/web}
    haproxy: {port: 13210, bind_address: 127.0.0.1%[2]s}
`, dir, extra)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	good := write("good.yaml", base(""))
	unknown := write("unknown.yaml", base("")+"bogus: 1\n")
	badHAProxy := write("bad-haproxy.yaml", base(", listen: [no-such-directive]"))
	badMethod := write("bad-method.yaml", strings.Replace(base(""), "method: zookeeper", "method: consul", 1))
	pluginNoPath := write("plugin-no-path.yaml", strings.Replace(base(""), "method: zookeeper, hosts: [127.0.0.1:2181], path: /services/web", "method: plugin, config: {url: x}", 1))
	pluginKeysElsewhere := write("plugin-keys.yaml", strings.Replace(base(""), "path: /services/web", "path: /services/web, plugin: /bin/x", 1))
	pluginOK := write("plugin-ok.yaml", strings.Replace(base(""), "method: zookeeper, hosts: [127.0.0.1:2181], path: /services/web", "method: plugin, plugin: /usr/lib/syncstack/inventory, config: {url: x}, interval: 5s", 1))
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"-config", good, "-check-config"}, 0, []string{"OK, 1 services"}},
		{[]string{"-config", unknown, "-check-config"}, 1, []string{unknown, "line 10", "bogus"}},
		{[]string{"-config", unknown}, 1, []string{unknown, "bogus"}},
		{[]string{"-config", badHAProxy, "-check-config"}, 1, []string{"haproxy -c", "no-such-directive"}},
		{[]string{"-config", badMethod, "-check-config"}, 1, []string{"services.web.discovery.method", "consul"}},
		{[]string{"-config", pluginNoPath, "-check-config"}, 1, []string{"services.web.discovery", "plugin: missing"}},
		{[]string{"-config", pluginKeysElsewhere, "-check-config"}, 1, []string{"services.web.discovery", "only for method plugin"}},
		{[]string{"-config", pluginOK, "-check-config"}, 0, []string{"OK, 1 services"}},
		{[]string{"-config", "../../synapse/testdata/airbnb/synapse.conf.json", "-check-config"}, 0, []string{"OK, 2 services", "statsd: not implemented"}},
		{[]string{"-config", "../../configs/synapse.yaml", "-check-config"}, 0, []string{"OK, 3 services"}},
		{[]string{"-nope"}, 2, []string{"nope"}},
	} {
		code, out := runSynapse(tc.args...)
		if code != tc.code {
			t.Errorf("synapse %v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("synapse %v: output lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
}

// The binary: serves, picks up a new service on SIGHUP with one reload,
// and on SIGTERM exits 0 leaving HAProxy serving.
func TestSignals(t *testing.T) {
	testserver.CheckHAProxy(t)
	zks := testserver.StartZooKeeper(t)
	reg, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	a := testserver.StartBackend(t, "a", "127.0.0.11")
	for _, p := range []string{"/services/web", "/services/api"} {
		if _, err := reg.Register(context.Background(), p, registry.Instance{Host: a.Host, Port: a.Port, Name: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	testserver.KillHAProxyAtCleanup(t, filepath.Join(dir, "haproxy.pid"))
	webPort, apiPort, admin := testserver.FreePort(t), testserver.FreePort(t), testserver.FreePort(t)
	svc := func(name string, port int) string {
		return fmt.Sprintf("  %s:\n    discovery: {method: zookeeper, hosts: [%s], path: /services/%s}\n    haproxy: {port: %d, bind_address: 127.0.0.1}\n", name, zks.Nodes[0].Addr, name, port)
	}
	head := fmt.Sprintf(`admin: {listen: 127.0.0.1:%[2]d}
state_file_path: %[1]s/state.json
haproxy:
  manage: true
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  reload_min_interval: 100ms
  defaults: [mode http, timeout connect 1s, timeout client 5s, timeout server 5s]
services:
`, dir, admin)
	cfgPath := filepath.Join(dir, "synapse.yaml")
	os.WriteFile(cfgPath, []byte(head+svc("web", webPort)), 0o644)

	var logs testserver.LockedBuffer
	cmd := exec.Command(synapseBin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	get := func(port int) string {
		c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return b.String()
	}
	registrytest.Eventually(t, 15*time.Second, "web served", func() bool { return get(webPort) == "a" })
	pid := testserver.HAProxyWorkerPID(t, filepath.Join(dir, "master.sock"))

	os.WriteFile(cfgPath, []byte(head+svc("web", webPort)+svc("api", apiPort)), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	registrytest.Eventually(t, 15*time.Second, "api served after SIGHUP", func() bool { return get(apiPort) == "a" })
	if p := testserver.HAProxyWorkerPID(t, filepath.Join(dir, "master.sock")); p == pid {
		t.Error("no reload for the new service")
	}
	// The counter moves just after the new worker answers.
	var metrics string
	registrytest.Eventually(t, 2*time.Second, "one structural reload in the metrics", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", admin))
		if err != nil {
			return false
		}
		var m bytes.Buffer
		m.ReadFrom(resp.Body)
		resp.Body.Close()
		metrics = grep(m.String(), "reloads_total")
		return strings.Contains(metrics, `synapse_haproxy_reloads_total{reason="structure"} 1`)
	})
	if strings.Contains(metrics, `reason="structure"} 2`) {
		t.Errorf("more than one reload: %s", metrics)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Errorf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("synapse did not exit on SIGTERM")
	}
	if get(webPort) != "a" {
		t.Error("HAProxy stopped serving when synapse exited")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
