// Package fileoutput is synapse's file generator: one JSON file per service
// (<output_directory>/<service>.json) holding its current backends, written
// atomically and only when it changed. Files of services that are no longer
// configured are removed.
package fileoutput

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/atomicfile"
)

// Config is synapse's `file_output` section.
type Config struct {
	OutputDirectory string `yaml:"output_directory"`
}

// Generator writes the files.
type Generator struct {
	dir string
	// written is each service as its file holds it, with the file's size,
	// mtime and content hash then: an apply marshals and writes only the
	// files whose service changed or that someone else touched (a stat
	// each), and reads back only the latter: a file it wrote is compared
	// by hash.
	// With hundreds of services a synapse otherwise spends most of an
	// apply re-reading unchanged files (measured in make scale).
	written map[string]writtenFile
	// rendered counts the files rendered and compared with the disk.
	rendered int

	// The whole directory (a stat of every file, and the listing that
	// finds files of services no longer configured) is checked when the
	// configured services change and otherwise at most every verifyEvery:
	// per change, those syscalls were most of a synapse's CPU at 200
	// services (make scale). A file edited or deleted by someone else is
	// put right at the first apply after that (synapse applies at least
	// every 30 s).
	verifyEvery time.Duration
	lastVerify  time.Time
	names       map[string]bool // the services configured at the last check
	verified    int             // checks done (tests)
}

// verifyEvery is the default period of the whole-directory check.
const verifyEvery = 10 * time.Second

type writtenFile struct {
	svc  generators.Service
	size int64
	mod  time.Time
	sum  [sha256.Size]byte // of the content
}

// readFile reads a file back to compare it; tests count the reads.
var readFile = os.ReadFile

// New validates cfg and creates the output directory.
func New(cfg Config) (*Generator, error) {
	if cfg.OutputDirectory == "" {
		return nil, errors.New("file_output.output_directory: missing")
	}
	if err := os.MkdirAll(cfg.OutputDirectory, 0o755); err != nil {
		return nil, fmt.Errorf("file_output.output_directory: %w", err)
	}
	return &Generator{dir: cfg.OutputDirectory, written: map[string]writtenFile{}, verifyEvery: verifyEvery}, nil
}

// Name implements generators.Generator.
func (g *Generator) Name() string { return "file_output" }

// record is one backend in a service file: nerve's record plus its state.
type record struct {
	Host                 string            `json:"host"`
	Port                 int               `json:"port"`
	Name                 string            `json:"name,omitempty"`
	Weight               *int              `json:"weight,omitempty"`
	HAProxyServerOptions string            `json:"haproxy_server_options,omitempty"`
	Labels               map[string]string `json:"labels,omitempty"`
	State                string            `json:"state"`
}

// Apply implements generators.Generator.
func (g *Generator) Apply(_ context.Context, st generators.State) error {
	var errs []error
	verify := time.Since(g.lastVerify) >= g.verifyEvery || !g.sameNames(st)
	for name, svc := range st.Services.All() {
		if svc.Unknown {
			continue // nothing known yet: keep the file as it is
		}
		path := filepath.Join(g.dir, name+".json")
		prev, known := g.written[name] // the file holds what we wrote
		if known && verify {
			if fi, err := os.Stat(path); err != nil || fi.Size() != prev.size || !fi.ModTime().Equal(prev.mod) {
				known = false // someone else touched it: compare with the disk
			}
		}
		if known && prev.svc.Equal(svc) {
			continue
		}
		delete(g.written, name)
		g.rendered++
		recs := make([]record, 0, len(svc.Backends))
		for _, b := range svc.Backends {
			recs = append(recs, record{b.Host, b.Port, b.Name, b.Weight, b.HAProxyServerOptions, b.Labels, string(b.State)})
		}
		data, err := json.MarshalIndent(recs, "", "  ")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		data = append(data, '\n')
		sum := sha256.Sum256(data)
		switch {
		case known && sum == prev.sum:
			// A change the file does not show (a registration order, say).
			// Not compared with the disk: as for an unchanged service, a
			// file someone else edited is put right at the next check.
			prev.svc = svc
			g.written[name] = prev
			continue
		case known:
			// The file holds what we wrote last: no need to read it back.
			err = atomicfile.Write(path, data, atomicfile.Options{Rebuilt: true})
		default:
			err = writeIfChanged(path, data)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if fi, err := os.Stat(path); err == nil {
			g.written[name] = writtenFile{svc: svc, size: fi.Size(), mod: fi.ModTime(), sum: sum}
		}
	}
	if !verify {
		return errors.Join(errs...)
	}
	g.verified++
	g.lastVerify = time.Now()
	g.names = make(map[string]bool, st.Services.Len())
	for name := range st.Services.All() {
		g.names[name] = true
	}
	entries, err := os.ReadDir(g.dir)
	if err != nil {
		g.lastVerify = time.Time{} // check again at the next apply
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		if _, configured := st.Services.Lookup(name); !configured {
			if err := os.Remove(filepath.Join(g.dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
			delete(g.written, name)
		}
	}
	return errors.Join(errs...)
}

// sameNames reports whether st configures the services of the last check.
func (g *Generator) sameNames(st generators.State) bool {
	if len(g.names) != st.Services.Len() {
		return false
	}
	for name := range st.Services.All() {
		if !g.names[name] {
			return false
		}
	}
	return true
}

// writeIfChanged replaces path with data unless it holds data already. The
// files are rebuilt at every start (the first Apply renders every service
// that is known: heard from, or in the state cache), so the directory is
// not fsynced: after a crash a file may hold its previous version until
// then, never a partial one.
func writeIfChanged(path string, data []byte) error {
	if old, err := readFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	return atomicfile.Write(path, data, atomicfile.Options{Rebuilt: true})
}
