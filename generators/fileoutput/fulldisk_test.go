package fileoutput

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// A full disk fails Apply and keeps the previous file whole (it used to be
// truncated silently: the atomic writer dropped write errors). Runs on a
// real 16 KiB tmpfs; skipped where mounting is not permitted.
func TestFullDiskKeepsPreviousFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	g, err := New(Config{OutputDirectory: dir})
	if err != nil {
		t.Fatal(err)
	}
	backends := func(n int) []generators.Backend {
		var out []generators.Backend
		for i := range n {
			out = append(out, generators.Backend{Instance: registry.Instance{Host: "10.0.0.1", Port: 1000 + i, Name: "i-" + strconv.Itoa(i)}, State: registry.StateReady})
		}
		return out
	}
	small := generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: backends(2)}})}
	if err := g.Apply(context.Background(), small); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "web.json")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	big := generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: backends(1000)}})}
	if err := g.Apply(context.Background(), big); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Apply of ~100 KiB on a 16 KiB disk: %v, want ENOSPC", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Errorf("web.json is %d bytes after the failed write, want the previous %d", len(after), len(before))
	}
}
