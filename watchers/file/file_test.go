package file

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/syncstack/syncstack/registry"
)

func TestFileWatcher(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "web.json")
	write := func(s string) {
		tmp := path + ".tmp"
		os.WriteFile(tmp, []byte(s), 0o644)
		os.Rename(tmp, path)
	}
	write(`[{"host":"10.0.0.1","port":80,"name":"a"},{"host":"10.0.0.2","port":70000},{"host":"10.0.0.3","port":80,"haproxy_server_options":"check\nserver evil 1.1.1.1:1"}]`)
	m := registry.NewMetrics(nil)
	w := &Watcher{Path: path, Interval: 20 * time.Millisecond, Metrics: m}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan []registry.Instance, 10)
	go w.Run(ctx, out)
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
	// A broken file keeps the last set.
	write(`[{"host":`)
	select {
	case s := <-out:
		t.Fatalf("a broken file sent %v", s)
	case <-time.After(200 * time.Millisecond):
	}
	// YAML works too.
	yml := filepath.Join(dir, "api.yaml")
	os.WriteFile(yml, []byte("- {host: 10.0.0.9, port: 9000, name: y, labels: {az: b}}\n"), 0o644)
	set, skipped, err := Read(yml, registry.DecodeOptions{})
	if err != nil || len(skipped) != 0 || len(set) != 1 || set[0].Labels["az"] != "b" {
		t.Errorf("Read(yaml) = %v, %v, %v", set, skipped, err)
	}
}
