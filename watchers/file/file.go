// Package file watches a file that lists a service's instances, as a JSON
// array of nerve records (or the same in YAML), and sends the set again
// whenever the file changes. It checks the file every interval.
package file

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/syncstack/syncstack/registry"
)

// Watcher reads Path every Interval, when its size or mtime moved.
type Watcher struct {
	Path     string
	Interval time.Duration
	Opts     registry.DecodeOptions
	Log      *slog.Logger
	Metrics  *registry.Metrics
}

// Run implements watchers.Watcher. A file that cannot be read or parsed
// sends nothing (the last set stands); a record that fails validation is
// skipped and counted, the rest sent.
func (w *Watcher) Run(ctx context.Context, out chan<- []registry.Instance) error {
	interval := w.Interval
	if interval <= 0 {
		interval = time.Second
	}
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	m := w.Metrics
	if m == nil {
		m = registry.DefaultMetrics()
	}
	var lastMod time.Time
	lastSize := int64(-1)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		info, err := os.Stat(w.Path)
		switch {
		case err != nil:
			log.Warn("file watcher: cannot stat; keeping the last set", "path", w.Path, "err", err)
		case info.ModTime().Equal(lastMod) && info.Size() == lastSize:
		default:
			set, skipped, err := Read(w.Path, w.Opts)
			if err != nil {
				log.Error("file watcher: keeping the last set", "err", err)
				break
			}
			lastMod, lastSize = info.ModTime(), info.Size()
			for _, s := range skipped {
				m.RecordsSkipped.WithLabelValues("file", w.Path).Inc()
				log.Warn("skipping bad record", "path", w.Path, "err", s)
			}
			select {
			case out <- set:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// maxFileSize bounds an instances file.
const maxFileSize = 64 << 20

// Read parses an instances file. It fails only when the file as a whole
// cannot be read; bad records are returned as skipped, with their index.
func Read(path string, opts registry.DecodeOptions) (set []registry.Instance, skipped []error, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxFileSize {
		return nil, nil, fmt.Errorf("%s: %d bytes, over the %d byte limit", path, len(data), maxFileSize)
	}
	var raw []json.RawMessage
	ext := strings.ToLower(filepath.Ext(path))
	if ext == ".yaml" || ext == ".yml" {
		var items []any
		if err := yaml.Unmarshal(data, &items); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, it := range items {
			b, err := json.Marshal(it)
			if err != nil {
				b = []byte("null")
			}
			raw = append(raw, b)
		}
	} else if err := json.Unmarshal(data, &raw); err != nil {
		return nil, nil, fmt.Errorf("%s: want a JSON array of instance records: %w", path, err)
	}
	set = []registry.Instance{}
	for i, r := range raw {
		in, err := registry.Decode(r, opts)
		if err != nil {
			skipped = append(skipped, fmt.Errorf("%s: record %d: %w", path, i, err))
			continue
		}
		set = append(set, in)
	}
	return registry.Dedupe(set), skipped, nil
}
