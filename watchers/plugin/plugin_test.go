package plugin

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/plugin"
	"github.com/syncstack/syncstack/registry"
)

// failedReads is a log handler that signals every failed read the poll
// loop reports (a warning with a retry_in attribute).
type failedReads chan struct{}

func (f failedReads) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (f failedReads) WithAttrs([]slog.Attr) slog.Handler           { return f }
func (f failedReads) WithGroup(string) slog.Handler                { return f }
func (f failedReads) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			select {
			case f <- struct{}{}:
			default: // the test stopped counting
			}
			return false
		}
		return true
	})
	return nil
}

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "testplugin")
	if out, err := exec.Command("go", "build", "-o", bin, "../../plugin/testdata/testplugin").CombinedOutput(); err != nil {
		t.Fatalf("build the test plugin: %v\n%s", err, out)
	}
	modeFile := filepath.Join(dir, "mode")
	setMode := func(m string) {
		if err := os.WriteFile(modeFile, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setMode(`[{"host":"10.0.0.1","port":80,"name":"a"}]`)
	client, err := plugin.NewClient(plugin.Config{Path: bin}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := registry.NewMetrics(nil)
	failed := make(failedReads, 100)
	w := &Watcher{Client: client, Service: "web", Config: map[string]string{"mode_file": modeFile}, Interval: 50 * time.Millisecond, Metrics: m, Log: slog.New(failed)}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []registry.Instance, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })

	next := func(what string) []registry.Instance {
		t.Helper()
		select {
		case set := <-out:
			return set
		case <-time.After(5 * time.Second):
			t.Fatalf("no set: %s", what)
			return nil
		}
	}
	// quiet waits for failed calls and fails on anything sent meanwhile.
	// Of three, at most the first began before the mode changed, and the
	// third began after the second was handled.
	quiet := func(what string) {
		t.Helper()
		for len(failed) > 0 {
			<-failed
		}
		for range 3 {
			select {
			case set := <-out:
				t.Fatalf("%s: sent %v", what, set)
			case <-failed:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no failed call", what)
			}
		}
	}
	if set := next("first"); len(set) != 1 || set[0].Name != "a" {
		t.Fatalf("first set %v", set)
	}
	setMode(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.2","port":80,"name":"b"}]`)
	if set := next("b added"); len(set) != 2 {
		t.Fatalf("after b: %v", set)
	}
	setMode("fail")
	quiet("the plugin failing: the last set stands")
	setMode("crash")
	quiet("the plugin crashing: the last set stands")
	// The set it answers next, unchanged, is not sent again: the next
	// set received is the changed one. (poll's TestRun proves the same
	// with every read counted.)
	setMode(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.2","port":80,"name":"b"}]`)

	// A bad record is skipped and counted; the rest is sent.
	setMode(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.3","port":70000,"name":"bad"}]`)
	if set := next("with a bad record"); len(set) != 1 || set[0].Name != "a" {
		t.Fatalf("with a bad record: %v", set)
	}
	if n := testutil.ToFloat64(m.RecordsSkipped.WithLabelValues("plugin", "web")); n < 1 {
		t.Errorf("skipped records = %v", n)
	}
}
