package haproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/atomicfile"
)

// configFile is haproxy.cfg: each content is validated with `haproxy -c`
// where it will live and replaces the file atomically, only when it
// changed; writes that follow runtime changes go to a background writer,
// off their latency path. Its lock serializes every write (the apply path
// and the background writer); the background writer's hand-over has a
// lock of its own, so that handing it a state never waits for a write in
// flight (rendering and haproxy -c at 10k servers: ~100 ms, which every
// change applied meanwhile used to wait out: the benchmark's max).
type configFile struct {
	cfg *Config
	log *slog.Logger
	m   *Metrics
	// writeState renders st and writes it with writeContent (the
	// Generator's writeFile: it sets aside the servers haproxy -c
	// refuses); called with mu held.
	writeState func(ctx context.Context, st generators.State) error

	mu sync.Mutex // held while writing
	// lastWritten is the SHA-256 of the content last written, not the
	// content: at 10k servers that is 1 MB kept for a comparison.
	lastWritten [sha256.Size]byte
	background  bool // the write in flight is the background writer's (with mu)

	pmu                 sync.Mutex        // the hand-over to the background writer
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
	// The writer takes its state with mu held: dropped here, an older
	// state cannot overwrite this one afterwards.
	f.pmu.Lock()
	f.pending = nil
	f.pmu.Unlock()
	return f.writeState(ctx, st)
}

// writeLater hands the state to the background writer: the newest state
// wins, and rendering and validation (haproxy -c: tens of ms, a second at
// 10k servers) stay off the path of runtime changes. The writer writes at
// most once per config_write_interval; a reload never waits for it, as it
// writes the file itself first.
func (f *configFile) writeLater(st generators.State) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
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
		f.pmu.Lock()
		wait := time.Until(f.lastBackgroundWrite.Add(f.cfg.ConfigWriteInterval.D()))
		idle := f.pending == nil
		f.pmu.Unlock()
		if wait > 0 && !idle {
			time.Sleep(wait)
		}
		f.mu.Lock()
		f.pmu.Lock()
		st := f.pending
		f.pending = nil
		if st == nil {
			f.writerBusy = false
			f.pmu.Unlock()
			f.mu.Unlock()
			return
		}
		f.pmu.Unlock()
		f.background = true
		err := f.writeState(context.Background(), *st)
		f.background = false
		f.mu.Unlock()
		f.pmu.Lock()
		f.lastBackgroundWrite = time.Now()
		f.pmu.Unlock()
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
	sum := sha256.Sum256([]byte(content))
	if sum == f.lastWritten {
		return nil
	}
	if fileHolds(path, content) {
		f.lastWritten = sum
		return nil
	}
	// One copy for both writes (10k servers: ~1 MB each).
	data := []byte(content)
	// The candidate is validated where it will live (relative paths in
	// the config resolve the same), then becomes the file.
	candidate := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".candidate")
	if err := atomicfile.Write(candidate, data, atomicfile.Options{Mode: configMode}); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	defer os.Remove(candidate)
	validateFn := validate
	if f.background {
		validateFn = validateIdle
	}
	if err := validateFn(ctx, f.cfg.Binary, candidate); err != nil {
		f.m.ValidationFailures.Inc()
		f.log.Error("rendered config rejected by haproxy -c; keeping the previous one", "err", err)
		return err
	}
	if err := atomicfile.Write(path, data, atomicfile.Options{Mode: configMode}); err != nil {
		return fmt.Errorf("haproxy config: %w", err)
	}
	f.lastWritten = sum
	f.m.ConfigWrites.Inc()
	return nil
}

// fileHolds reports whether the file at path holds exactly content. It
// compares as it reads (the size first), rather than reading the whole
// file into memory: a write at 10k servers is ~1 MB, and every background
// write during a burst of changes checked the file.
func fileHolds(path, content string) bool {
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	if info, err := fh.Stat(); err != nil || info.Size() != int64(len(content)) {
		return false
	}
	var buf [32 << 10]byte
	for {
		n, err := fh.Read(buf[:])
		if n > len(content) || string(buf[:n]) != content[:n] {
			return false
		}
		content = content[n:]
		if err == io.EOF {
			return len(content) == 0
		}
		if err != nil {
			return false
		}
	}
}

// validate runs `haproxy -c` on file; a rejection is a *ValidationError.
func validate(ctx context.Context, binary, file string) error {
	return runValidation(ctx, binary, file, false)
}

// validateIdle is validate at the lowest CPU priority (nice 19), for the
// background writer: at 10k servers haproxy -c takes ~100 ms, which on a
// small host otherwise competes with HAProxy, the registry client and the
// apply path for the CPU while changes are landing.
func validateIdle(ctx context.Context, binary, file string) error {
	return runValidation(ctx, binary, file, true)
}

// backgroundNice is the niceness of the background writer's haproxy -c.
const backgroundNice = 19

func runValidation(ctx context.Context, binary, file string, idle bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "-c", "-f", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return newValidationError(file, "", err)
	}
	if idle {
		// Best effort: the child may have run a few instructions at the
		// normal priority; a refusal leaves it there, which is only slower.
		syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, backgroundNice)
	}
	if err := cmd.Wait(); err != nil {
		return newValidationError(file, out.String(), err)
	}
	return nil
}
