// Command demo runs the whole system on one host with zero setup: an
// embedded single-node etcd as the registry, three demo HTTP backends on
// 127.0.0.11-13 each with its own nerve, and one synapse managing a
// master-worker HAProxy on 127.0.0.1:3210. It prints what to curl and which
// synctl commands to try; Ctrl-C stops everything and removes its data.
//
// `demo -check` runs the same, checks that traffic flows, that a drain and
// an add-to-lb work through synctl with no reload, and exits (0 on success).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(run()) }

type demo struct {
	bin, dir   string
	etcdURL    string
	port       int
	adminPort  int   // synapse's
	adminPorts []int // synapse's, the three nerves', etcd's peer port
	peerPort   int
	pagePort   int
	procs      []*exec.Cmd
	backends   []*http.Server
	log        io.Writer
	haproxyPID string
	cleaned    bool
}

func run() int {
	check := flag.Bool("check", false, "start everything, verify it end to end, stop, and exit 0 on success")
	port := flag.Int("port", 3210, "HAProxy frontend port of the demo service (another is picked when the default is busy)")
	etcdPort := flag.Int("etcd-port", 2379, "embedded etcd client port (another is picked when the default is busy)")
	pagePort := flag.Int("page-port", 9393, "the fleet page (synctl serve) (another is picked when the default is busy)")
	flag.Parse()
	explicit := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	// The defaults are etcd's and HAProxy's usual ports: a machine running
	// either already gets free ones instead; a port given on the command
	// line is used or refused.
	var err error
	if *port, err = pickPort(*port, explicit["port"], "-port"); err == nil {
		if *etcdPort, err = pickPort(*etcdPort, explicit["etcd-port"], "-etcd-port"); err == nil {
			*pagePort, err = pickPort(*pagePort, explicit["page-port"], "-page-port")
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	d := &demo{bin: filepath.Dir(self), port: *port, pagePort: *pagePort, etcdURL: fmt.Sprintf("http://127.0.0.1:%d", *etcdPort)}
	// The synapse's and the three nerves' admin listeners, and etcd's peer port.
	for range 5 {
		p, err := pickPort(0, false, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		d.adminPorts = append(d.adminPorts, p)
	}
	d.adminPort, d.peerPort = d.adminPorts[0], d.adminPorts[4]
	if d.dir, err = os.MkdirTemp("", "syncstack-demo-"); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	logFile, err := os.Create(filepath.Join(d.dir, "demo.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	d.log = logFile
	defer func() {
		if !d.cleaned {
			d.cleanup()
		}
	}()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		fmt.Fprintf(os.Stderr, "demo: logs in %s (kept)\n", d.dir)
		d.dir = ""
		return 1
	}
	if *check {
		if err := d.check(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "demo check FAILED:", err)
			return 1
		}
		fmt.Println("demo check passed")
		return 0
	}
	d.banner()
	<-ctx.Done()
	fmt.Println("\nstopping: nerves deregister, synapse and HAProxy stop, temp data is removed")
	d.cleanup()
	d.cleaned = true
	fmt.Println("stopped, nothing left behind")
	return 0
}

// pickPort returns port when it is free; a busy default is replaced by a
// free port (0 asks for one), a busy port the user chose is an error.
func pickPort(port int, explicit bool, flagName string) (int, error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil && explicit {
		return 0, fmt.Errorf("port %d is busy (another demo running?): choose another with %s", port, flagName)
	}
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return 0, err
		}
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (d *demo) start(ctx context.Context) error {
	for _, b := range []string{"nerve", "synapse", "synctl", "embedded-etcd"} {
		if _, err := os.Stat(filepath.Join(d.bin, b)); err != nil {
			return fmt.Errorf("%s not found next to the demo binary (run `make build`): %w", b, err)
		}
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		return errors.New("haproxy is not installed (make demo installs it: apt-get install haproxy)")
	}
	fmt.Printf("syncstack demo: data and logs in %s\n", d.dir)

	// The registry: a real etcd, embedded.
	if err := d.spawn("embedded-etcd", "-data-dir", filepath.Join(d.dir, "etcd"), "-client-url", d.etcdURL,
		"-peer-url", fmt.Sprintf("http://127.0.0.1:%d", d.peerPort)); err != nil {
		return err
	}
	if err := waitTCP(ctx, strings.TrimPrefix(d.etcdURL, "http://"), 30*time.Second); err != nil {
		return fmt.Errorf("embedded etcd: %w", err)
	}

	// Three backends, "hosts" 127.0.0.11-13, each with its nerve.
	for i := 1; i <= 3; i++ {
		host := fmt.Sprintf("127.0.0.1%d", i)
		name := fmt.Sprintf("backend-%d", i)
		ln, err := net.Listen("tcp", host+":0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" {
				io.WriteString(w, "OK\n")
				return
			}
			fmt.Fprintf(w, "hello from %s (%s)\n", name, host)
		})}
		go srv.Serve(ln)
		d.backends = append(d.backends, srv)
		port := ln.Addr().(*net.TCPAddr).Port
		cfg := fmt.Sprintf(`instance_id: %s
admin: {listen: "127.0.0.1:%d"}
etcd_lease_ttl: 3s
services:
  web:
    host: %s
    port: %d
    check_interval: 500ms
    rise: 2
    fall: 2
    checks: [{type: http, uri: /health, expect: OK, timeout: 300ms}]
    etcd_endpoints: [%s]
    etcd_path: /services/web/services
`, name, d.adminPorts[i], host, port, d.etcdURL)
		path := filepath.Join(d.dir, name+".nerve.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return err
		}
		if err := d.spawn("nerve", "-config", path); err != nil {
			return err
		}
	}

	// One synapse, managing HAProxy.
	cfg := fmt.Sprintf(`id: demo-synapse
state_file_path: %[1]s/synapse-state.json
admin: {listen: "127.0.0.1:%[4]d"}
overrides: {method: etcd, hosts: [%[2]s], root: /syncstack}
haproxy:
  manage: true
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/haproxy.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  defaults: [mode http, timeout connect 1s, timeout client 30s, timeout server 30s, retries 2, option redispatch, "retry-on conn-failure empty-response response-timeout"]
services:
  web:
    discovery: {method: etcd, hosts: [%[2]s], path: /services/web/services}
    haproxy:
      port: %[3]d
      bind_address: 127.0.0.1
      listen: [mode http, balance roundrobin]
`, d.dir, d.etcdURL, d.port, d.adminPort)
	path := filepath.Join(d.dir, "synapse.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	d.haproxyPID = filepath.Join(d.dir, "haproxy.pid")
	if err := d.spawn("synapse", "-config", path); err != nil {
		return err
	}
	// The fleet page.
	if err := d.spawn("synctl", "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", d.pagePort), "--etcd", d.etcdURL); err != nil {
		return err
	}
	// Ready when HAProxy routes to all three backends.
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen := map[string]bool{}
		for range 12 {
			if body, err := get(d.url()); err == nil {
				seen[body] = true
			}
		}
		if len(seen) == 3 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("HAProxy does not route to all three backends after 60s (saw %d)", len(seen))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *demo) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", d.port) }

func (d *demo) spawn(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(d.bin, name), args...)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	return nil
}

func (d *demo) synctl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(d.bin, "synctl"), append(args, "--etcd", d.etcdURL)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *demo) banner() {
	fmt.Printf(`
syncstack is running:
  registry   embedded etcd        %[1]s
  backends   backend-1..3         127.0.0.11-13, each with a nerve (admin APIs on 127.0.0.1:%[3]d … %[4]d)
  synapse    demo-synapse         status: curl -s 127.0.0.1:%[5]d/status | head -40
  HAProxy    master-worker        http://127.0.0.1:%[2]d/
  fleet page synctl serve         http://127.0.0.1:%[8]d/   (open it in a browser; it refreshes itself)

Try:
  for i in $(seq 6); do curl -s http://127.0.0.1:%[2]d/; done
  %[6]s/synctl status --etcd %[1]s
  %[6]s/synctl drain 127.0.0.12 --reason "demo" --wait --etcd %[1]s
  for i in $(seq 6); do curl -s http://127.0.0.1:%[2]d/; done     # backend-2 gets nothing new
  %[6]s/synctl add-to-lb 127.0.0.12 --wait --etcd %[1]s
  %[6]s/synctl drain 127.0.0.11 --for 10s --etcd %[1]s              # heals by itself
  %[6]s/synctl history --etcd %[1]s
  curl -s 127.0.0.1:%[5]d/metrics | grep synapse_haproxy_reloads_total   # membership never reloads

Press Ctrl-C to stop everything and remove %[7]s.
`, d.etcdURL, d.port, d.adminPorts[1], d.adminPorts[3], d.adminPort, d.bin, d.dir, d.pagePort)
}

// check verifies the demo end to end.
func (d *demo) check(ctx context.Context) error {
	if out, err := d.synctl("status"); err != nil || !strings.Contains(out, "demo-synapse") {
		return fmt.Errorf("synctl status: %v\n%s", err, out)
	}
	if out, err := d.synctl("drain", "127.0.0.12", "--reason", "demo check", "--wait", "--timeout", "20s"); err != nil {
		return fmt.Errorf("synctl drain: %v\n%s", err, out)
	}
	page, err := get(fmt.Sprintf("http://127.0.0.1:%d/", d.pagePort))
	if err != nil || !strings.Contains(page, "<td>127.0.0.12</td><td>drain</td>") {
		return fmt.Errorf("the fleet page does not show the drain: %v\n%s", err, page)
	}
	for range 12 {
		body, err := get(d.url())
		if err != nil {
			return err
		}
		if strings.Contains(body, "backend-2") {
			return errors.New("the drained backend-2 still got new requests")
		}
	}
	if out, err := d.synctl("add-to-lb", "127.0.0.12", "--wait", "--timeout", "20s"); err != nil {
		return fmt.Errorf("synctl add-to-lb: %v\n%s", err, out)
	}
	back := false
	for range 12 {
		body, _ := get(d.url())
		back = back || strings.Contains(body, "backend-2")
	}
	if !back {
		return errors.New("backend-2 got no traffic after add-to-lb")
	}
	metrics, err := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", d.adminPort))
	if err != nil {
		return err
	}
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "synapse_haproxy_reloads_total") && !strings.HasSuffix(l, " 0") {
			return fmt.Errorf("a reload happened: %s", l)
		}
	}
	return nil
}

func (d *demo) cleanup() {
	// Nerves and synapse first (SIGTERM: nerves deregister), then etcd.
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if d.haproxyPID != "" {
		if b, err := os.ReadFile(d.haproxyPID); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGUSR1) // soft stop: finish requests, then exit
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
					if err := syscall.Kill(pid, 0); err != nil || zombie(pid) {
						break
					}
				}
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, s := range d.backends {
		s.Close()
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && bytes.Contains(b, []byte(") Z "))
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func waitTCP(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %v", addr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
