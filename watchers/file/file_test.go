package file

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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

func TestFileWatcher(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.json")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.2","port":70000},{"host":"10.0.0.3","port":80,"haproxy_server_options":"check\nserver evil 1.1.1.1:1"}]`)
	m := registry.NewMetrics(nil)
	failed := make(failedReads, 100)
	w := &Watcher{Path: path, Interval: 20 * time.Millisecond, Metrics: m, Log: slog.New(failed)}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []registry.Instance, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	next := func() []registry.Instance {
		t.Helper()
		select {
		case s := <-out:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no set")
			return nil
		}
	}
	if s := next(); len(s) != 1 || s[0].Name != "a" {
		t.Fatalf("first set %v", s)
	}
	if n := testutil.ToFloat64(m.RecordsSkipped.WithLabelValues("file", path)); n != 2 {
		t.Errorf("skipped = %v, want 2", n)
	}
	write(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.4","port":81,"name":"b"}]`)
	if s := next(); len(s) != 2 {
		t.Fatalf("after the change: %v", s)
	}
	// A broken file keeps the last set: two failed reads (the second
	// starts after the first was handled) and nothing sent.
	write(`[{"host":`)
	for range 2 {
		select {
		case s := <-out:
			t.Fatalf("a broken file sent %v", s)
		case <-failed:
		case <-time.After(5 * time.Second):
			t.Fatal("the broken file was not read")
		}
	}
	// A missing file too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case s := <-out:
			t.Fatalf("a missing file sent %v", s)
		case <-failed:
		case <-time.After(5 * time.Second):
			t.Fatal("the missing file was not looked for")
		}
	}
	// The next good file is the next set: nothing came in between.
	write(`[{"host":"10.0.0.5","port":82,"name":"c"}]`)
	if s := next(); len(s) != 1 || s[0].Name != "c" {
		t.Fatalf("after the broken and missing file: %v", s)
	}
}

func TestReadYAML(t *testing.T) {
	yml := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(yml, []byte("- {host: 10.0.0.9, port: 9000, name: y, labels: {az: b}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	set, skipped, err := Read(yml, registry.DecodeOptions{})
	if err != nil || len(skipped) != 0 || len(set) != 1 || set[0].Labels["az"] != "b" {
		t.Errorf("Read(yaml) = %v, %v, %v", set, skipped, err)
	}
}
