package checks

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/internal/testserver"
)

func build(t *testing.T, c Config, host string, port int) Check {
	t.Helper()
	if c.Timeout == 0 {
		c.Timeout = confutil.Duration(time.Second)
	}
	if err := c.Finalize(host, port, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	ch, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func run(ch Check, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return ch.Check(ctx)
}

func hostPort(t *testing.T, addr string) (string, int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port := hostPort(t, ln.Addr().String())
	ch := build(t, Config{Type: "tcp"}, host, port)
	if err := run(ch, time.Second); err != nil {
		t.Errorf("listening: %v", err)
	}
	ln.Close()
	if err := run(ch, time.Second); err == nil {
		t.Error("closed port: healthy")
	}
	if ch.Name() != "tcp@"+ln.Addr().String() {
		t.Errorf("name %q", ch.Name())
	}
}

func TestHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/health":
			if r.Host != "svc.internal" || r.Header.Get("X-Check") != "1" {
				http.Error(w, "wrong host or header", 400)
				return
			}
			io.WriteString(w, "status: OK")
		case "/redirect":
			http.Redirect(w, r, "/health", http.StatusFound)
		case "/slow":
			time.Sleep(2 * time.Second)
		default:
			http.Error(w, "nope", 503)
		}
	}))
	t.Cleanup(srv.Close)
	host, port := hostPort(t, srv.Listener.Addr().String())
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"healthy", Config{Type: "http", URI: "/health", HostHeader: "svc.internal", Headers: map[string]string{"X-Check": "1"}, Expect: "OK"}, true},
		{"wrong host header", Config{Type: "http", URI: "/health"}, false},
		{"503", Config{Type: "http", URI: "/down"}, false},
		{"503 accepted", Config{Type: "http", URI: "/down", ExpectStatus: "5xx"}, true},
		{"body lacks expect", Config{Type: "http", URI: "/health", HostHeader: "svc.internal", Headers: map[string]string{"X-Check": "1"}, Expect: "READY"}, false},
		{"redirect is not followed", Config{Type: "http", URI: "/redirect"}, false},
		{"redirect accepted", Config{Type: "http", URI: "/redirect", ExpectStatus: "200-399"}, true},
		{"timeout", Config{Type: "http", URI: "/slow", Timeout: confutil.Duration(200 * time.Millisecond)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := build(t, tc.cfg, host, port)
			start := time.Now()
			timeout := time.Second
			if tc.cfg.Timeout != 0 {
				timeout = tc.cfg.Timeout.D()
			}
			err := run(ch, timeout)
			if (err == nil) != tc.ok {
				t.Errorf("Check() = %v, want ok=%v", err, tc.ok)
			}
			if time.Since(start) > 1500*time.Millisecond {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestHTTPSVerifiesByDefault(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	host, port := hostPort(t, srv.Listener.Addr().String())
	if err := run(build(t, Config{Type: "https"}, host, port), time.Second); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("self-signed certificate accepted by default: %v", err)
	}
	if err := run(build(t, Config{Type: "https", TLSSkipVerify: true}, host, port), time.Second); err != nil {
		t.Errorf("tls_skip_verify: %v", err)
	}
}

func TestExec(t *testing.T) {
	if err := run(build(t, Config{Type: "exec", Command: "exit 0"}, "", 0), time.Second); err != nil {
		t.Errorf("exit 0: %v", err)
	}
	err := run(build(t, Config{Type: "exec", Command: "echo broken >&2; exit 3"}, "", 0), time.Second)
	if err == nil || !strings.Contains(err.Error(), "broken") {
		t.Errorf("exit 3: %v, want the output in the error", err)
	}
}

// The timeout kills the whole process group: a child the script started in
// the background must not outlive the check.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := fmt.Sprintf("sleep 30 & echo $! > %s; wait", pidFile)
	ch := build(t, Config{Type: "exec", Command: cmd, Timeout: confutil.Duration(300 * time.Millisecond)}, "", 0)
	start := time.Now()
	err := run(ch, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Check() = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the check took %v to give up", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			break
		}
		// A zombie is dead too: it only waits for its reaper.
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the background child %d survived the check's timeout", pid)
		}
	}
}

func TestRedis(t *testing.T) {
	addr := testserver.StartRedis(t, "")
	host, port := hostPort(t, addr)
	if err := run(build(t, Config{Type: "redis"}, host, port), time.Second); err != nil {
		t.Errorf("PING: %v", err)
	}
	secured := testserver.StartRedis(t, "s3cret")
	host, port = hostPort(t, secured)
	if err := run(build(t, Config{Type: "redis"}, host, port), time.Second); err == nil {
		t.Error("PING without AUTH to a password-protected redis: healthy")
	}
	if err := run(build(t, Config{Type: "redis", Password: "s3cret"}, host, port), time.Second); err != nil {
		t.Errorf("AUTH + PING: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Type: "mysql"}, `type: "mysql" is not supported`},
		{Config{Type: "http", URI: "health"}, "uri"},
		{Config{Type: "http", ExpectStatus: "2xy"}, "expect_status"},
		{Config{Type: "http", ExpectStatus: "300-200"}, "expect_status"},
		{Config{Type: "exec"}, "command"},
		{Config{Type: "tcp", Timeout: confutil.Duration(5 * time.Second)}, "timeout"},
		{Config{Type: "tcp", Port: 70000}, "port"},
	} {
		err := tc.cfg.Finalize("127.0.0.1", 80, 2*time.Second)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Finalize(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
