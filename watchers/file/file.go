// Package file watches a file that lists a service's instances, as a JSON
// array of nerve records (or the same in YAML), and sends the set again
// whenever it changes. It checks the file every interval.
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

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/watchers"
	"github.com/syncstack/syncstack/watchers/poll"
)

func init() {
	watchers.Register("file", func() watchers.MethodConfig { return &Config{} })
}

// DefaultInterval is how often the file is checked when no interval is set.
const DefaultInterval = time.Second

// Config is method file's keys.
type Config struct {
	// Path is the file of instances.
	Path string `yaml:"path"`
	// Interval: how often the file is checked (default 1s).
	Interval confutil.Duration `yaml:"interval"`
}

// Finalize implements watchers.MethodConfig.
func (c *Config) Finalize(ch *watchers.Check) {
	if c.Path == "" {
		ch.Problem("path", "missing: the file of instances")
	}
}

// NewWatcher implements watchers.MethodConfig.
func (c *Config) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	return &Watcher{Path: c.Path, Interval: c.Interval.D(), Opts: d.Decode, Log: d.Log, Metrics: d.Metrics}, nil
}

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
		interval = DefaultInterval
	}
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	m := w.Metrics
	if m == nil {
		m = registry.DefaultMetrics()
	}
	// The file is parsed again only when its size or mtime moved.
	var (
		last     []registry.Instance
		lastMod  time.Time
		lastSize int64 = -1
	)
	read := func(context.Context) ([]registry.Instance, error) {
		info, err := os.Stat(w.Path)
		if err != nil {
			return nil, err
		}
		if info.ModTime().Equal(lastMod) && info.Size() == lastSize {
			return last, nil
		}
		set, skipped, err := Read(w.Path, w.Opts)
		if err != nil {
			return nil, err
		}
		for _, s := range skipped {
			m.RecordsSkipped.WithLabelValues("file", w.Path).Inc()
			log.Warn("skipping bad record", "path", w.Path, "err", s)
		}
		last, lastMod, lastSize = set, info.ModTime(), info.Size()
		return set, nil
	}
	return poll.Run(ctx, out, poll.Options{Interval: interval, Read: read, Log: log, Attrs: []any{"watcher", "file", "path", w.Path}})
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
