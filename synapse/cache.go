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
	// Seq is each set's registration order (service → Instance.ID →
	// Seq), which records do not carry: a synapse started from the cache
	// picks the same leader (leader_election) and keeps the same order
	// (backend_order no_shuffle) as before.
	Seq map[string]map[string]int64 `json:"seq,omitempty"`
}

// cacheSeq collects the registration order of the sets, for the cache.
func cacheSeq(sets map[string][]registry.Instance) map[string]map[string]int64 {
	var out map[string]map[string]int64
	for name, set := range sets {
		for _, in := range set {
			if in.Seq == 0 {
				continue
			}
			if out == nil {
				out = map[string]map[string]int64{}
			}
			if out[name] == nil {
				out[name] = map[string]int64{}
			}
			out[name][in.ID()] = in.Seq
		}
	}
	return out
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
				in.Seq = c.Seq[name][in.ID()]
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

// cacheWriteInterval spaces state cache writes (each is an fsync). A
// synapse killed within it restarts from a cache that lacks the last
// changes; the first write after a quiet spell is immediate.
const cacheWriteInterval = 100 * time.Millisecond

// cacheLater hands a snapshot to the cache writer: written atomically in
// the background, never on the path of a change.
func (s *Synapse) cacheLater(sets map[string][]registry.Instance, ovr registry.OverrideSet, panics map[string][]registry.Instance) {
	if s.cfg.StateFilePath == "" {
		return
	}
	snap := make(map[string][]registry.Instance, len(sets))
	for k, v := range sets { // the loop replaces slices, never mutates them
		snap[k] = v
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	s.cachePending = &cache{Sets: snap, Overrides: ovr, Panic: panics}
	if s.cacheBusy {
		return
	}
	s.cacheBusy = true
	s.cacheWG.Add(1)
	go func() {
		defer s.cacheWG.Done()
		for {
			s.cacheMu.Lock()
			if wait := time.Until(s.cacheLast.Add(cacheWriteInterval)); wait > 0 {
				s.cacheMu.Unlock()
				select {
				case <-time.After(wait):
				case <-s.cacheKick: // shutting down: write now
				}
				s.cacheMu.Lock()
			}
			c := s.cachePending
			s.cachePending = nil
			if c == nil {
				s.cacheBusy = false
				s.cacheMu.Unlock()
				return
			}
			s.cacheLast = time.Now()
			s.cacheMu.Unlock()
			c.Seq = cacheSeq(c.Sets) // off the loop: the slices are never mutated
			if err := saveCache(s.cfg.StateFilePath, *c); err != nil {
				s.log.Warn("state cache not written", "err", err)
			}
		}
	}()
}

// flushCache makes the cache writer write what it has now, and waits.
func (s *Synapse) flushCache() {
	notify(s.cacheKick)
	s.cacheWG.Wait()
}
