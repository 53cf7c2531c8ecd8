package daemon

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The exit codes are part of the interface (systemd units, scripts): the
// table says them as numbers, not through the constants.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		exit       bool
		out, err   string // substrings of stdout and stderr ("" : must be empty)
		configPath string
		check      bool
	}{
		{name: "defaults", args: nil, configPath: "/etc/x.yaml"},
		{name: "config and check", args: []string{"-config", "a.yaml", "-check-config"}, configPath: "a.yaml", check: true},
		{name: "help on stdout", args: []string{"-h"}, code: 0, exit: true, out: "Usage: x [flags]\n\nabout x\n\nFlags:\n"},
		{name: "long help", args: []string{"--help"}, code: 0, exit: true, out: "-check-config"},
		{name: "unknown flag: usage on stderr", args: []string{"-bogus"}, code: 2, exit: true, err: "Usage: x"},
		{name: "version", args: []string{"--version"}, code: 0, exit: true, out: "x "},
		{name: "stray argument", args: []string{"extra"}, code: 2, exit: true, err: `x: unexpected arguments ["extra"]`},
		{name: "bad log level", args: []string{"-log-level", "loud"}, code: 2, exit: true, err: "x: -log-level"},
		{name: "bad log format", args: []string{"-log-format", "xml"}, code: 2, exit: true, err: "x: -log-format: want text or json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errw bytes.Buffer
			c := Command{Name: "x", About: "about x", DefaultConfig: "/etc/x.yaml", Stdout: &out, Stderr: &errw}
			f, code, exit := c.Parse(tc.args)
			if code != tc.code || exit != tc.exit {
				t.Fatalf("code %d exit %v, want %d %v (stderr %q)", code, exit, tc.code, tc.exit, errw.String())
			}
			for _, c := range []struct {
				got, want string
			}{{out.String(), tc.out}, {errw.String(), tc.err}} {
				if c.want == "" && c.got != "" || !strings.Contains(c.got, c.want) {
					t.Errorf("output %q, want %q", c.got, c.want)
				}
			}
			if exit {
				return
			}
			if f.ConfigPath != tc.configPath || f.CheckConfig != tc.check || f.Log == nil {
				t.Errorf("flags %+v", f)
			}
		})
	}
}

func TestServeAdmin(t *testing.T) {
	var logs bytes.Buffer
	c := Command{Name: "x", Stderr: &logs}
	f, _, _ := c.Parse(nil)
	stop, err := ServeAdmin(f.Log, "off", nil)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	stop, err = ServeAdmin(f.Log, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") }))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hi" {
		t.Errorf("body %q", body)
	}
	// The address is taken now: a second listener is an error, not a
	// daemon without its admin API.
	if _, err := ServeAdmin(f.Log, addr, nil); err == nil {
		t.Error("listening twice on one address succeeded")
	}
	stop()
	if !strings.Contains(logs.String(), "admin API listening") {
		t.Errorf("logs: %s", logs.String())
	}
}

func TestSignals(t *testing.T) {
	sigs, stop := Signals()
	defer stop()
	for _, tc := range []struct {
		sig    syscall.Signal
		reload bool
	}{{syscall.SIGHUP, true}, {syscall.SIGTERM, false}, {syscall.SIGINT, false}} {
		if err := syscall.Kill(syscall.Getpid(), tc.sig); err != nil {
			t.Fatal(err)
		}
		select {
		case s := <-sigs:
			if s.Reload != tc.reload || s.Sig != tc.sig {
				t.Errorf("%v: got %+v", tc.sig, s)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v not delivered", tc.sig)
		}
	}
}

func TestProfileMemory(t *testing.T) {
	saved := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = saved })
	for _, tc := range []struct {
		name    string
		godebug string
		on      bool
		want    int
	}{
		{"off", "", false, 0},
		{"on at the runtime's default", "", true, 512 * 1024},
		{"GODEBUG wins over off", "memprofilerate=4096", false, 12345},
		{"GODEBUG wins over on", "gctrace=1,memprofilerate=1", true, 12345},
		{"other GODEBUG settings do not", "gctrace=1", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GODEBUG", tc.godebug)
			runtime.MemProfileRate = 12345 // what GODEBUG would have set
			ProfileMemory(tc.on)
			if runtime.MemProfileRate != tc.want {
				t.Errorf("MemProfileRate = %d, want %d", runtime.MemProfileRate, tc.want)
			}
		})
	}
}
