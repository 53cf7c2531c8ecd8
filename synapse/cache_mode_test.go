package synapse

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/syncstack/syncstack/registry"
)

// The state cache maps the fleet: it is written 0600, also over an older
// cache file others could read, and a new directory for it is 0750.
func TestStateCacheMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "state.json")
	sets := map[string][]registry.Instance{"web": {{Host: "10.0.0.1", Port: 80}}}
	if err := saveCache(path, cache{Sets: sets}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o750} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask can only take bits away: no more than want.
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s: mode %04o, want at most %04o", p, got, want)
		}
	}
	old := filepath.Join(dir, "old.json")
	if err := os.WriteFile(old, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := saveCache(old, cache{Sets: sets}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(old); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten cache: mode %04o, want 0600", fi.Mode().Perm())
	}
	c, err := loadCache(old)
	if err != nil || len(c.Sets["web"]) != 1 {
		t.Errorf("cache read back: %+v, %v", c, err)
	}
}
