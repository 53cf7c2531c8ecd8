// Package atomicfile replaces files so that a reader sees the old content or
// the new, never a part: temp file in the same directory, write, fsync,
// rename, fsync of the directory (skipped for a file its writer rebuilds
// at every start: Options.Rebuilt). Every error on the way is returned and
// leaves the old file in place: a full disk must fail the write, not
// truncate the file.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Options adjust a write.
type Options struct {
	// Mode of the new file; 0 means 0644.
	Mode fs.FileMode
	// Check, when set, is called with the temp file's path once the data
	// is written and synced, before the rename; an error keeps the old
	// file and is returned. (HAProxy's config is checked this way, with
	// haproxy -c, before it replaces the one HAProxy loads.)
	Check func(tmpPath string) error
	// Rebuilt marks a file its writer rebuilds from its sources every time
	// it starts (synapse's file_output, once the service is known): the
	// directory is not fsynced after the rename. A crash may then bring
	// the previous version back, complete (the data is still synced
	// before the rename, so never an empty or partial file), until the
	// writer replaces it.
	// It saves a journal commit per write, most of a write's latency when
	// many processes on a host write at once (50 writers: p50 16–23 ms
	// with the directory synced, 10.5 ms without).
	Rebuilt bool
}

// file is what WriteFile needs of an *os.File; tests inject faults here.
type file interface {
	Name() string
	Write(p []byte) (int, error)
	Sync() error
	Chmod(mode fs.FileMode) error
	Close() error
}

// createTemp makes the temp file; a variable so tests can inject faults.
var createTemp = func(dir, pattern string) (file, error) { return os.CreateTemp(dir, pattern) }

// syncDir fsyncs a directory, so the rename survives a crash.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFile replaces path with data (mode 0644).
func WriteFile(path string, data []byte) error {
	return Write(path, data, Options{})
}

// Write replaces path with data as opts say. On any error the old file (if
// any) is untouched and no temp file is left behind; the error names the
// step that failed and the path.
func Write(path string, data []byte, opts Options) error {
	mode := opts.Mode
	if mode == 0 {
		mode = 0o644
	}
	dir := filepath.Dir(path)
	tmp, err := createTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("atomicfile: create temp file for %s: %w", path, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp.Name())
		}
	}()
	closed := false
	fail := func(step string, err error) error {
		if !closed {
			tmp.Close()
		}
		return fmt.Errorf("atomicfile: %s %s: %w", step, path, err)
	}
	n, err := tmp.Write(data)
	if err == nil && n != len(data) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(data))
	}
	if err != nil {
		return fail("write", err)
	}
	if err := tmp.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fail("chmod", err)
	}
	closed = true
	if err := tmp.Close(); err != nil {
		return fail("close", err)
	}
	if opts.Check != nil {
		if err := opts.Check(tmp.Name()); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fail("rename", err)
	}
	renamed = true
	if opts.Rebuilt {
		return nil
	}
	// The new content is in place; a failed directory fsync means a crash
	// could bring the old one back, so it is reported, except where the
	// file system cannot sync a directory at all.
	if err := syncDir(dir); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("atomicfile: fsync directory of %s: %w", path, err)
	}
	return nil
}
