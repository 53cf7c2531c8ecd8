package main

import (
	"bytes"
	"context"
	"errors"
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
	os.MkdirAll(filepath.Join(dir, "errors"), 0o755)
	write("errors/503.http", "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nbusy\n")
	relativePath := write("relative.yaml", strings.Replace(base(""), "  defaults: [mode http,", "  global: [default-path config]\n  defaults: [errorfile 503 errors/503.http, mode http,", 1))
	trailingComma := write("synapse.conf.json", "{\n  \"services\": {},\n  \"haproxy\": {},\n}\n")
	sharedBind := write("shared-bind.yaml", base("")+"  api:\n    discovery: {method: zookeeper, hosts: [127.0.0.1:2181], path: /services/api}\n    haproxy: {port: 13210}\n")
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
		{[]string{"-nope"}, 2, []string{"nope", "Usage: synapse"}},
		// haproxy -c runs next to config_file_path: a path relative to it
		// resolves as it will for HAProxy.
		{[]string{"-config", relativePath, "-check-config"}, 0, []string{"OK, 1 services"}},
		{[]string{"-h"}, 0, []string{"Usage: synapse", "-check-config"}},
		{[]string{"--help"}, 0, []string{"Usage: synapse"}},
		{[]string{"--version"}, 0, []string{"synapse ", "(commit ", "go1."}},
		// A .json config is JSON: a trailing comma is a syntax error with
		// the file and line (YAML read it silently).
		{[]string{"-config", trailingComma, "-check-config"}, 1, []string{trailingComma + ": line 4, column 1: JSON syntax error"}},
		// Two services on one address and port: HAProxy would split the
		// traffic. The default bind address (localhost) and 127.0.0.1 are
		// the same address.
		{[]string{"-config", sharedBind, "-check-config"}, 1, []string{"services.web.haproxy.port", "127.0.0.1:13210 is also the frontend of service api (localhost:13210)"}},
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

// Airbnb's own example configs, verbatim, in Airbnb's repository layout
// (testdata/airbnb: config/, spec/support/) and run from its root, load:
// every key is implemented or warned about, svcdir_test.json finds its
// service_conf_dir relative to the working directory and says so. Where
// haproxy -c then refuses the rendered config, it is for a placeholder of
// the example, named in the message: a certificate that does not exist, a
// backend ("cache") no service defines, test keywords.
func TestAirbnbExampleConfigs(t *testing.T) {
	testserver.CheckHAProxy(t)
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"config/synapse.conf.json", []string{"statsd: not implemented", "haproxy -c", "/path/to/cert/example.pem"}},
		{"config/discovery-multi.conf.json", []string{"services.service1.discovery_multi.watchers.secondary.discovery_jitter: not implemented", "haproxy -c", "/path/to/cert/example.pem"}},
		{"config/hostheader_test.json", []string{"no port (and no haproxy.server_port_override)", "haproxy -c", "unable to find required use_backend: 'cache'"}},
		{"config/svcdir_test.json", []string{"relative to the working directory", "haproxy -c", "unable to find required use_backend: 'cache'"}},
		{"spec/support/minimum.conf.yaml", []string{"haproxy -c", "unknown keyword 'global_test_option'"}},
	} {
		var out bytes.Buffer
		cmd := exec.Command(synapseBin, "-config", tc.file, "-check-config")
		cmd.Dir = "testdata/airbnb"
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Run()
		if strings.Contains(out.String(), "invalid config: "+tc.file) {
			t.Errorf("%s: refused before haproxy -c:\n%s", tc.file, out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.file, w, out.String())
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

// synapseConfig is a config for a managed HAProxy in dir serving one static
// backend on port, with extra lines in haproxy.global.
func synapseConfig(dir string, admin, port int, backend *testserver.Backend, global string) string {
	return fmt.Sprintf(`admin: {listen: 127.0.0.1:%[2]d}
haproxy:
  manage: true
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  global: [%[5]s]
  defaults: [mode http, timeout connect 1s, timeout client 5s, timeout server 5s]
services:
  web:
    discovery: {method: static, servers: [{host: %[3]s, port: %[4]d, name: a}]}
    haproxy: {port: %[6]d, bind_address: 127.0.0.1}
`, dir, admin, backend.Host, backend.Port, global, port)
}

// A global line HAProxy rejects: a plain start exits 1 with HAProxy's
// message, before serving /healthz and without starting HAProxy (it used
// to serve "ok" forever with no HAProxy behind it).
func TestStartRejectedByHAProxy(t *testing.T) {
	testserver.CheckHAProxy(t)
	dir := t.TempDir()
	testserver.KillHAProxyAtCleanup(t, filepath.Join(dir, "haproxy.pid"))
	a := testserver.StartBackend(t, "a", "127.0.0.1")
	admin := testserver.FreePort(t)
	cfgPath := filepath.Join(dir, "synapse.yaml")
	os.WriteFile(cfgPath, []byte(synapseConfig(dir, admin, testserver.FreePort(t), a, "no-such-global-keyword 1")), 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, synapseBin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("synapse still running after 30s with a config HAProxy rejects:\n%s", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit status 1\n%s", err, out.String())
	}
	for _, w := range []string{"haproxy -c", "no-such-global-keyword"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "haproxy.pid")); err == nil {
		t.Error("HAProxy was started with a config it rejects")
	}
}

// SIGHUP with a config HAProxy rejects: logged, and the old config keeps
// being served (synapse and HAProxy both).
func TestSIGHUPKeepsConfigHAProxyRejects(t *testing.T) {
	testserver.CheckHAProxy(t)
	dir := t.TempDir()
	testserver.KillHAProxyAtCleanup(t, filepath.Join(dir, "haproxy.pid"))
	a := testserver.StartBackend(t, "a", "127.0.0.1")
	admin, port := testserver.FreePort(t), testserver.FreePort(t)
	cfgPath := filepath.Join(dir, "synapse.yaml")
	os.WriteFile(cfgPath, []byte(synapseConfig(dir, admin, port, a, "")), 0o644)

	var logs testserver.LockedBuffer
	cmd := exec.Command(synapseBin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	get := func(url string) string {
		c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return b.String()
	}
	web := fmt.Sprintf("http://127.0.0.1:%d/", port)
	registrytest.Eventually(t, 15*time.Second, "web served", func() bool { return get(web) == "a" })
	// The server is added at runtime and written to the file just after.
	var before []byte
	registrytest.Eventually(t, 15*time.Second, "the server in haproxy.cfg", func() bool {
		before, _ = os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
		return bytes.Contains(before, []byte("server a_"))
	})

	os.WriteFile(cfgPath, []byte(synapseConfig(dir, admin, port, a, "no-such-global-keyword 1")), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	registrytest.Eventually(t, 15*time.Second, "the rejection logged", func() bool {
		return strings.Contains(logs.String(), "HAProxy rejects the new config; keeping the old one")
	})
	if !strings.Contains(logs.String(), "no-such-global-keyword") {
		t.Errorf("the log lacks HAProxy's message:\n%s", logs.String())
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "haproxy.cfg")); !bytes.Equal(after, before) {
		t.Errorf("haproxy.cfg changed after a rejected SIGHUP:\n%s", after)
	}
	if got := get(web); got != "a" {
		t.Errorf("web after the rejected SIGHUP: %q", got)
	}
	if got := get(fmt.Sprintf("http://127.0.0.1:%d/healthz", admin)); got != "ok\n" {
		t.Errorf("/healthz after the rejected SIGHUP: %q", got)
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
}

// A global maxconn the descriptor limit cannot hold: HAProxy would refuse
// to start ("Cannot raise FD limit") and synapse retry it forever. It exits
// 1 at once instead, naming maxconn and the limit.
func TestMaxconnOverFDLimit(t *testing.T) {
	testserver.CheckHAProxy(t)
	dir := t.TempDir()
	testserver.KillHAProxyAtCleanup(t, filepath.Join(dir, "haproxy.pid"))
	a := testserver.StartBackend(t, "a", "127.0.0.1")
	cfgPath := filepath.Join(dir, "synapse.yaml")
	os.WriteFile(cfgPath, []byte(synapseConfig(dir, testserver.FreePort(t), testserver.FreePort(t), a, "maxconn 1000")), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 1024 descriptors, soft and hard: maxconn 1000 needs about 2017.
	out, err := exec.CommandContext(ctx, "bash", "-c", `ulimit -n 1024 && exec "$0" -config "$1"`, synapseBin, cfgPath).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("synapse still running after 30s:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want exit status 1\n%s", err, out)
	}
	for _, w := range []string{"maxconn 1000", "limit is 1024", "LimitNOFILE"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	// -check-config warns, and passes: the limit is this shell's.
	out, err = exec.Command("bash", "-c", `ulimit -n 1024 && exec "$0" -config "$1" -check-config`, synapseBin, cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warning: here, HAProxy cannot start") {
		t.Errorf("-check-config under a low limit: %v\n%s", err, out)
	}
}
