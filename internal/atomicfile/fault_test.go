package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// faultyFile is a real temp file whose operations fail as told.
type faultyFile struct {
	*os.File
	writeErr, syncErr, chmodErr, closeErr error
	short                                 bool
}

func (f *faultyFile) Write(p []byte) (int, error) {
	if f.writeErr != nil {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, f.writeErr
	}
	if f.short {
		return f.File.Write(p[:len(p)-1])
	}
	return f.File.Write(p)
}

func (f *faultyFile) Sync() error {
	if f.syncErr != nil {
		return f.syncErr
	}
	return f.File.Sync()
}

func (f *faultyFile) Chmod(m fs.FileMode) error {
	if f.chmodErr != nil {
		return f.chmodErr
	}
	return f.File.Chmod(m)
}

func (f *faultyFile) Close() error {
	err := f.File.Close()
	if f.closeErr != nil {
		return f.closeErr
	}
	return err
}

// Every failing step fails the write with its error, keeps the old file and
// leaves no temp file.
func TestWriteFileFaults(t *testing.T) {
	eio := syscall.EIO
	for _, tc := range []struct {
		name  string
		fault faultyFile
		want  error
	}{
		{"write ENOSPC", faultyFile{writeErr: syscall.ENOSPC}, syscall.ENOSPC},
		{"short write", faultyFile{short: true}, nil},
		{"fsync EIO", faultyFile{syncErr: eio}, eio},
		{"chmod", faultyFile{chmodErr: syscall.EPERM}, syscall.EPERM},
		{"close EIO", faultyFile{closeErr: eio}, eio},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out.json")
			if err := WriteFile(path, []byte("old content\n")); err != nil {
				t.Fatal(err)
			}
			orig := createTemp
			t.Cleanup(func() { createTemp = orig })
			createTemp = func(dir, pattern string) (file, error) {
				f, err := os.CreateTemp(dir, pattern)
				if err != nil {
					return nil, err
				}
				ff := tc.fault
				ff.File = f
				return &ff, nil
			}
			err := WriteFile(path, []byte("new content, longer than the old\n"))
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if got, _ := os.ReadFile(path); string(got) != "old content\n" {
				t.Errorf("file is %q, want the old content", got)
			}
			if l := leftovers(t, dir, "out.json"); len(l) != 0 {
				t.Errorf("temp files left: %v", l)
			}
		})
	}
}

func TestWriteFileDirSyncError(t *testing.T) {
	orig := syncDir
	t.Cleanup(func() { syncDir = orig })
	syncDir = func(string) error { return syscall.EIO }
	path := filepath.Join(t.TempDir(), "x")
	if err := WriteFile(path, []byte("a")); !errors.Is(err, syscall.EIO) {
		t.Errorf("WriteFile = %v, want the directory fsync's EIO", err)
	}
	syncDir = func(string) error { return syscall.EINVAL } // a file system that cannot
	if err := WriteFile(path, []byte("b")); err != nil {
		t.Errorf("WriteFile = %v; EINVAL from a directory fsync is not an error", err)
	}
}

// The Check hook sees the complete new file; its error keeps the old one.
func TestWriteCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	if err := WriteFile(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	rejected := errors.New("haproxy -c: rejected")
	var checked []byte
	err := Write(path, []byte("new"), Options{Check: func(tmp string) error {
		checked, _ = os.ReadFile(tmp)
		return rejected
	}})
	if !errors.Is(err, rejected) {
		t.Fatalf("Write = %v, want the check's error", err)
	}
	if string(checked) != "new" {
		t.Errorf("the check saw %q, want the complete new content", checked)
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("file is %q after a failed check, want the old content", got)
	}
	if l := leftovers(t, dir, "haproxy.cfg"); len(l) != 0 {
		t.Errorf("temp files left: %v", l)
	}
	if err := Write(path, []byte("new"), Options{Mode: 0o600, Check: func(string) error { return nil }}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode())
	}
}

// countingFile counts the fsyncs of a real temp file.
type countingFile struct {
	*os.File
	syncs *int
}

func (f countingFile) Sync() error { *f.syncs++; return f.File.Sync() }

// A rebuilt file skips only the directory's fsync: its data is still
// synced before the rename, so a crash brings back the old file or the
// new, never an empty one.
func TestRebuiltSkipsOnlyTheDirectorySync(t *testing.T) {
	origCreate, origSync := createTemp, syncDir
	t.Cleanup(func() { createTemp, syncDir = origCreate, origSync })
	var fileSyncs, dirSyncs int
	createTemp = func(dir, pattern string) (file, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return nil, err
		}
		return countingFile{File: f, syncs: &fileSyncs}, nil
	}
	syncDir = func(string) error { dirSyncs++; return nil }
	path := filepath.Join(t.TempDir(), "svc.json")
	for _, tc := range []struct {
		opts                  Options
		wantFile, wantDirSync int
	}{
		{Options{}, 1, 1},
		{Options{Rebuilt: true}, 1, 0},
	} {
		fileSyncs, dirSyncs = 0, 0
		if err := Write(path, []byte("content"), tc.opts); err != nil {
			t.Fatal(err)
		}
		if fileSyncs != tc.wantFile || dirSyncs != tc.wantDirSync {
			t.Errorf("Rebuilt=%v: %d file and %d directory fsyncs, want %d and %d", tc.opts.Rebuilt, fileSyncs, dirSyncs, tc.wantFile, tc.wantDirSync)
		}
		if got, _ := os.ReadFile(path); string(got) != "content" {
			t.Errorf("Rebuilt=%v: file holds %q", tc.opts.Rebuilt, got)
		}
	}
}
