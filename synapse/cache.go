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
	// Panic: for each service whose removals the panic threshold holds,
	// the backends its reference counts as out (the held among them), so
	// a synapse restarted mid-panic holds the same ones rather than
	// letting them go.
	Panic map[string][]registry.Instance `json:"panic,omitempty"`
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
	for name, set := range c.Panic {
		kept := set[:0]
		for _, in := range set {
			if in.Validate() == nil {
				kept = append(kept, in)
			}
		}
		c.Panic[name] = kept
	}
	return &c, nil
}

// cacheMode is the state cache's mode: only synapse reads it. It maps the
// fleet (every backend's address, who drained what and why), and synapse
// serves HAProxy from it at start: nobody else has to read it, and nobody
// else may write it.
const cacheMode = 0o600

// saveCache writes the cache atomically (temp file, fsync, rename), mode
// 0600 (a new directory for it 0750).
func saveCache(path string, c cache) error {
	if path == "" {
		return nil
	}
	c.At = time.Now().UTC()
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.Write(path, data, atomicfile.Options{Mode: cacheMode})
}
