package synapse

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/syncstack/syncstack/internal/atomicfile"
	"github.com/syncstack/syncstack/registry"
)

// cache is what synapse last knew: the watcher sets (after filters) and
// the overrides. A synapse that starts while the registry is down serves
// from it.
type cache struct {
	At        time.Time                      `json:"at"`
	Sets      map[string][]registry.Instance `json:"sets"`
	Overrides registry.OverrideSet           `json:"overrides"`
}

// loadCache reads the cache; a missing file is no cache (nil, nil).
func loadCache(path string) (*cache, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c cache
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	// What reaches HAProxy is validated again, whoever wrote the file.
	for name, set := range c.Sets {
		kept := set[:0]
		for _, in := range set {
			if in.Validate() == nil {
				kept = append(kept, in)
			}
		}
		c.Sets[name] = kept
	}
	valid := c.Overrides.Overrides[:0]
	for _, o := range c.Overrides.Overrides {
		if o.Validate() == nil {
			valid = append(valid, o)
		}
	}
	c.Overrides.Overrides = valid
	return &c, nil
}

// saveCache writes the cache atomically (temp file, fsync, rename).
func saveCache(path string, sets map[string][]registry.Instance, ovr registry.OverrideSet) error {
	if path == "" {
		return nil
	}
	data, err := json.Marshal(cache{At: time.Now().UTC(), Sets: sets, Overrides: ovr})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data)
}
