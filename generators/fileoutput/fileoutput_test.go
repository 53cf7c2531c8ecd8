package fileoutput

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

func TestWritesOnChangeAndRemovesOldServices(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	g, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	w := 5
	st := generators.State{Services: generators.ServicesOf(map[string]generators.Service{
		"web": {Backends: []generators.Backend{{Instance: registry.Instance{Host: "10.0.0.1", Port: 80, Name: "a", Weight: &w}, State: registry.StateDrain}}},
		"api": {},
	})}
	if err := g.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	web, _ := os.ReadFile(filepath.Join(dir, "web.json"))
	want := "[\n  {\n    \"host\": \"10.0.0.1\",\n    \"port\": 80,\n    \"name\": \"a\",\n    \"weight\": 5,\n    \"state\": \"drain\"\n  }\n]\n"
	if string(web) != want {
		t.Errorf("web.json =\n%s\nwant\n%s", web, want)
	}
	if api, _ := os.ReadFile(filepath.Join(dir, "api.json")); string(api) != "[]\n" {
		t.Errorf("api.json = %q", api)
	}
	// Unchanged state is not rewritten. Proven without the clock's
	// resolution: the file's mtime is set back an hour, and a rewrite
	// (atomicfile: a new file renamed over it) would give it a new inode
	// and a current mtime.
	webPath := filepath.Join(dir, "web.json")
	past := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(webPath, past, past); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(webPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	again, err := os.Stat(webPath)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(info, again) || !again.ModTime().Equal(past) {
		t.Errorf("an unchanged file was rewritten: same inode %v, mtime %v (set to %v)", os.SameFile(info, again), again.ModTime(), past)
	}
	st.Services = st.Services.Without("api")
	if err := g.Apply(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "api.json")); !os.IsNotExist(err) {
		t.Errorf("api.json of a removed service is still there: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without output_directory succeeded")
	}
}

// An unchanged service's file is not rendered or read again on every
// apply, and the directory is not listed and stat'ed per change (at 200
// services those were most of a synapse's CPU per change: make scale);
// yet a file someone else edited or deleted is put right by the next
// whole-directory check (every verifyEvery, or when the configured
// services change), and so is a stray file of a service not configured.
func TestUnchangedFilesSkippedTouchedFilesRestored(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	g, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	st := generators.State{Services: generators.ServicesOf(map[string]generators.Service{
		"web": {Backends: []generators.Backend{{Instance: registry.Instance{Host: "10.0.0.1", Port: 80, Name: "a"}, State: registry.StateReady}}},
	})}
	ctx := context.Background()
	if err := g.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "web.json")
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rendered, verified := g.rendered, g.verified
	if err := g.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	if n := g.rendered - rendered; n != 0 {
		t.Errorf("an apply with nothing changed rendered (and read) %d files again, want 0", n)
	}
	if n := g.verified - verified; n != 0 {
		t.Errorf("an apply with nothing changed, within the check period, listed the directory %d times, want 0", n)
	}
	stray := filepath.Join(dir, "gone.json")
	for _, touch := range []struct {
		name string
		do   func() error
	}{
		{"edited", func() error { return os.WriteFile(path, []byte("[]\n"), 0o644) }},
		{"deleted", func() error { return os.Remove(path) }},
		{"left beside a stray file", func() error { return os.WriteFile(stray, []byte("[]\n"), 0o644) }},
	} {
		if err := touch.do(); err != nil {
			t.Fatal(err)
		}
		g.lastVerify = time.Now().Add(-g.verifyEvery) // the period is over
		if err := g.Apply(ctx, st); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(want) {
			t.Errorf("a file %s by hand was not put right: %q, want %q", touch.name, got, want)
		}
		if _, err := os.Stat(stray); !os.IsNotExist(err) {
			t.Errorf("a file of a service not configured is still there (%s): %v", touch.name, err)
		}
	}
	// A new service configured: checked at once, whatever the period.
	g.lastVerify = time.Now()
	st.Services = st.Services.With("api", generators.Service{})
	if err := os.WriteFile(stray, []byte("[]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Apply(ctx, st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("the configured services changed and a stray file stayed: %v", err)
	}
}

// The files are written without syncing their directory (atomicfile
// Rebuilt), which is safe only because a new generator (synapse's next
// start) rewrites every file that does not hold the current state: here
// the previous version a crash could bring back.
func TestFirstApplyRewritesAPreviousVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	st := func(host string) generators.State {
		return generators.State{Services: generators.ServicesOf(map[string]generators.Service{
			"web": {Backends: []generators.Backend{{Instance: registry.Instance{Host: host, Port: 80, Name: "a"}}}},
		})}
	}
	before, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := before.Apply(context.Background(), st("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	previous, _ := os.ReadFile(filepath.Join(dir, "web.json"))
	if err := before.Apply(context.Background(), st("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	// What the current state renders to, in a directory of its own.
	fresh, err := New(Config{OutputDirectory: filepath.Join(t.TempDir(), "fresh")})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Apply(context.Background(), st("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	current, _ := os.ReadFile(filepath.Join(fresh.dir, "web.json"))
	// The crash: the last rename is lost.
	if err := os.WriteFile(filepath.Join(dir, "web.json"), previous, 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := after.Apply(context.Background(), st("10.0.0.2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "web.json")); string(got) != string(current) {
		t.Errorf("web.json after a restart =\n%s\nwant\n%s", got, current)
	}
}

// A file this generator wrote is not read back when its service changes
// (its content is known by hash), nor rewritten when the change does not
// show in it; a file it did not write (the first apply) or that someone
// else touched is compared with the disk.
func TestChangedFilesAreNotReadBack(t *testing.T) {
	reads := 0
	orig := readFile
	t.Cleanup(func() { readFile = orig })
	readFile = func(path string) ([]byte, error) { reads++; return orig(path) }

	dir := filepath.Join(t.TempDir(), "out")
	g, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	g.verifyEvery = time.Hour // only the service-set check, at the first apply
	ctx := context.Background()
	// cached: a change of the service the file does not show.
	web := func(host string, cached bool) generators.State {
		return generators.State{Services: generators.ServicesOf(map[string]generators.Service{
			"web": {Cached: cached, Backends: []generators.Backend{{Instance: registry.Instance{Host: host, Port: 80, Name: "a"}}}},
		})}
	}
	if err := g.Apply(ctx, web("10.0.0.1", false)); err != nil {
		t.Fatal(err)
	}
	if reads != 1 {
		t.Errorf("first apply: %d reads, want 1 (a file this generator did not write)", reads)
	}
	reads = 0
	if err := g.Apply(ctx, web("10.0.0.2", false)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "web.json")
	if got, _ := os.ReadFile(path); !strings.Contains(string(got), "10.0.0.2") {
		t.Fatalf("web.json not rewritten: %s", got)
	}
	if reads != 0 {
		t.Errorf("a changed service's file was read back %d times", reads)
	}
	// A change the file does not show: not written.
	before, _ := os.Stat(path)
	if err := g.Apply(ctx, web("10.0.0.2", true)); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) || reads != 0 {
		t.Errorf("an unchanged rendering was rewritten (same inode %v) or read (%d)", os.SameFile(before, after), reads)
	}
	// Someone else rewrites the file: the next check compares with the disk.
	if err := os.WriteFile(path, []byte("[]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g.verifyEvery = 0
	if err := g.Apply(ctx, web("10.0.0.3", true)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !strings.Contains(string(got), "10.0.0.3") || reads != 1 {
		t.Errorf("touched file: %d reads (want 1), content %s", reads, got)
	}
}
