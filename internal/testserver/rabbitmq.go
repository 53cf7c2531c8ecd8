package testserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// RabbitMQ is a Debian rabbitmq-server started for a test.
type RabbitMQ struct {
	// Addr is the AMQP listener, 127.0.0.1:port (user guest, password
	// guest, vhost /).
	Addr string
	out  *LockedBuffer
}

// StartRabbitMQ starts Debian's rabbitmq-server (the broker, not the
// service wrapper that switches to the rabbitmq user) on loopback ports,
// with its own epmd, node name, data and log directories, waits until it
// accepts AMQP connections (about 6 s on 2 cores), and kills it in
// t.Cleanup. Nothing of it outlives the test: epmd runs in the foreground
// as a child of the test, not as the daemon Erlang would start.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	server := "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(server); err != nil {
		t.Fatalf("testserver: rabbitmq-server is not installed: apt-get install rabbitmq-server (make test does it)")
	}
	epmdBin, err := epmdPath()
	if err != nil {
		t.Fatalf("testserver: %v", err)
	}
	dir := t.TempDir()
	port, dist, epmdPort := FreePort(t), FreePort(t), FreePort(t)
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"HOME="+dir, // the Erlang cookie is written there
		fmt.Sprintf("ERL_EPMD_PORT=%d", epmdPort),
		fmt.Sprintf("RABBITMQ_NODENAME=syncstack%d@localhost", port),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "rabbitmq.pid"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-start_epmd false",
	)
	r := &RabbitMQ{Addr: fmt.Sprintf("127.0.0.1:%d", port), out: &LockedBuffer{}}
	epmd := exec.Command(epmdBin, "-port", fmt.Sprint(epmdPort), "-address", "127.0.0.1")
	epmd.Stdout, epmd.Stderr = r.out, r.out
	epmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := epmd.Start(); err != nil {
		t.Fatalf("testserver: start epmd: %v", err)
	}
	t.Cleanup(func() { epmd.Process.Kill(); epmd.Wait() })

	cmd := exec.Command(server)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = r.out, r.out
	// Its own process group: the script, beam and its port programs
	// (erl_child_setup, inet_gethost) all go at cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testserver: start rabbitmq-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	for deadline := time.Now().Add(60 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", r.Addr, time.Second); err == nil {
			c.Close()
			return r
		}
		select {
		case <-exited:
			t.Fatalf("testserver: rabbitmq-server exited:\n%s", r.out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("testserver: rabbitmq-server not accepting on %s after 60s:\n%s", r.Addr, r.out.String())
		}
	}
}

// epmdPath finds Erlang's epmd (in the erts directory on Debian).
func epmdPath() (string, error) {
	if p, err := exec.LookPath("epmd"); err == nil {
		return p, nil
	}
	m, _ := filepath.Glob("/usr/lib/erlang/erts-*/bin/epmd")
	if len(m) == 0 {
		return "", fmt.Errorf("epmd not found (apt-get install rabbitmq-server installs erlang)")
	}
	return m[len(m)-1], nil
}
