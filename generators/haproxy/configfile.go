package haproxy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/atomicfile"
)

// configFile is haproxy.cfg: each content is validated with `haproxy -c`
// where it will live and replaces the file atomically, only when it
// changed; writes that follow runtime changes go to a background writer,
// off their latency path. Its lock serializes every write (the apply path
// and the background writer).
type configFile struct {
	cfg *Config
	log *slog.Logger
	m   *Metrics
	// writeState renders st and writes it with writeContent (the
	// Generator's writeFile: it sets aside the servers haproxy -c
	// refuses); called with mu held.
	writeState func(ctx context.Context, st generators.State) error

	mu                  sync.Mutex
	lastWritten         string
	pending             *generators.State // newest state for the background writer
	writerBusy          bool
	writerWG            sync.WaitGroup
	lastBackgroundWrite time.Time
}

func newConfigFile(cfg *Config, log *slog.Logger, m *Metrics) *configFile {
	return &configFile{cfg: cfg, log: log, m: m}
}

// writeNow writes the file for st at once (waiting for a background write
// in flight, and dropping a pending one), so that a reload loads it.
func (f *configFile) writeNow(ctx context.Context, st generators.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = nil
	return f.writeState(ctx, st)
}

// writeLater hands the state to the background writer: the newest state
// wins, and rendering and validation (haproxy -c: tens of ms, a second at
// 10k servers) stay off the path of runtime changes. The writer writes at
// most once per config_write_interval; a reload never waits for it, as it
// writes the file itself first.
func (f *configFile) writeLater(st generators.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = &st
	if f.writerBusy {
		return
	}
	f.writerBusy = true
	f.writerWG.Add(1)
	go f.writer()
}

// writer writes the pending states until there is none.
func (f *configFile) writer() {
	defer f.writerWG.Done()
	for {
		f.mu.Lock()
		if wait := time.Until(f.lastBackgroundWrite.Add(f.cfg.ConfigWriteInterval.D())); wait > 0 && f.pending != nil {
			f.mu.Unlock()
			time.Sleep(wait)
			f.mu.Lock()
		}
		st := f.pending
		f.pending = nil
		if st == nil {
			f.writerBusy = false
			f.mu.Unlock()
			return
		}
		err := f.writeState(context.Background(), *st)
		f.lastBackgroundWrite = time.Now()
		f.mu.Unlock()
		if err != nil {
			f.log.Error("background config write failed", "err", err)
		}
	}
}

// wait waits for the background writer to finish.
func (f *configFile) wait() { f.writerWG.Wait() }

// writeContent validates content and replaces the file with it; f.mu is
// held.
func (f *configFile) writeContent(ctx context.Context, content string) error {
	path := f.cfg.ConfigFilePath
	if content == f.lastWritten {
		return nil
	}
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		f.lastWritten = content
		return nil
	}
	// The candidate is validated where it will live (relative paths in
	// the config resolve the same), then becomes the file.
	candidate := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".candidate")
	if err := atomicfile.Write(candidate, []byte(content), atomicfile.Options{Mode: configMode}); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	defer os.Remove(candidate)
	if err := validate(ctx, f.cfg.Binary, candidate); err != nil {
		f.m.ValidationFailures.Inc()
		f.log.Error("rendered config rejected by haproxy -c; keeping the previous one", "err", err)
		return err
	}
	if err := atomicfile.Write(path, []byte(content), atomicfile.Options{Mode: configMode}); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	f.lastWritten = content
	f.m.ConfigWrites.Inc()
	return nil
}

// validate runs `haproxy -c` on file; a rejection is a *ValidationError.
func validate(ctx context.Context, binary, file string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "-c", "-f", file).CombinedOutput()
	if err != nil {
		return newValidationError(file, string(out), err)
	}
	return nil
}
