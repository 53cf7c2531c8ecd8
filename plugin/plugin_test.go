package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPlugin builds testdata/testplugin once per test binary.
func testPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testplugin")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/testplugin").CombinedOutput(); err != nil {
		t.Fatalf("build the test plugin: %v\n%s", err, out)
	}
	return bin
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCheck(t *testing.T) {
	bin := testPlugin(t)
	modeFile := filepath.Join(t.TempDir(), "mode")
	setMode := func(m string) { os.WriteFile(modeFile, []byte(m), 0o644) }
	c := newClient(t, Config{Path: bin, Config: map[string]string{"mode_file": modeFile}})
	req := CheckRequest{Service: "web", Host: "127.0.0.1", Port: 80, Timeout: time.Second, Config: c.cfg.Config}
	check := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return c.Check(ctx, req)
	}
	pid := func() string {
		setMode("pid")
		defer setMode("ok")
		return check(5 * time.Second).Error()
	}

	for _, tc := range []struct {
		mode    string
		wantErr string // "" healthy
	}{
		{"ok", ""},
		{"fail", "backend says no"},
		{"ok", ""},
	} {
		setMode(tc.mode)
		err := check(5 * time.Second)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("mode %s: %v, want %q", tc.mode, err, tc.wantErr)
		}
	}
	first := pid()
	if again := pid(); again != first {
		t.Errorf("the plugin process changed between healthy calls: %s, %s", first, again)
	}

	// A plugin that crashes mid-call: an error, and a fresh process next.
	setMode("crash")
	if err := check(5 * time.Second); err == nil {
		t.Error("a crashed plugin answered healthy")
	}
	setMode("ok")
	if err := check(5 * time.Second); err != nil {
		t.Errorf("after a crash: %v", err)
	}
	if p := pid(); p == first {
		t.Error("the crashed plugin was not started again")
	}

	// A plugin that hangs: the call ends with its context, the process is
	// killed, and the next call gets a new one.
	hung := pid()
	setMode("hang")
	start := time.Now()
	if err := check(300 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("a hung plugin: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the hung call returned after %v", d)
	}
	setMode("ok")
	if err := check(5 * time.Second); err != nil {
		t.Errorf("after a hang: %v", err)
	}
	if p := pid(); p == hung {
		t.Error("the hung plugin was reused")
	}
}

func TestDiscover(t *testing.T) {
	bin := testPlugin(t)
	c := newClient(t, Config{Path: bin})
	set, err := c.Discover(context.Background(), DiscoverRequest{Service: "web", Config: map[string]string{
		"instances": `[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.2","port":80,"name":"b","weight":3}]`}})
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 2 || set[1].Name != "b" || set[1].Weight == nil || *set[1].Weight != 3 {
		t.Errorf("set = %+v", set)
	}
	if _, err := c.Discover(context.Background(), DiscoverRequest{Config: map[string]string{"mode": "fail"}}); err == nil || !strings.Contains(err.Error(), "backend says no") {
		t.Errorf("a failing discovery: %v", err)
	}
}

func TestRefused(t *testing.T) {
	bin := testPlugin(t)
	sum := sha256.Sum256([]byte("not the plugin"))
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"WrongChecksum", Config{Path: bin, SHA256: hex.EncodeToString(sum[:])}, "checksum"},
		{"NotAPlugin", Config{Path: "/bin/true"}, "plugin"},
		{"Missing", Config{Path: filepath.Join(t.TempDir(), "nope")}, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := c.Check(ctx, CheckRequest{Host: "127.0.0.1", Port: 1})
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), tc.wantErr) {
				t.Errorf("Check = %v, want an error mentioning %q", err, tc.wantErr)
			}
		})
	}
	for _, cfg := range []Config{{}, {Path: bin, SHA256: "xyz"}} {
		if _, err := NewClient(cfg, nil); err == nil {
			t.Errorf("NewClient(%+v) accepted", cfg)
		}
	}
	// The right checksum is accepted.
	data, _ := os.ReadFile(bin)
	good := sha256.Sum256(data)
	c := newClient(t, Config{Path: bin, SHA256: hex.EncodeToString(good[:])})
	if err := c.Check(context.Background(), CheckRequest{Host: "127.0.0.1", Port: 1}); err != nil {
		t.Errorf("with the right checksum: %v", err)
	}
}
