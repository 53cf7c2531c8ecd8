package haproxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fileHolds decides whether a config write is skipped (the file already
// holds the content): a wrong yes would leave HAProxy's file stale, so
// every kind of difference must say no, at any offset (the file is read in
// 32 KB pieces).
func TestFileHolds(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("server web_10.0.0.1:80 10.0.0.1:80 id 1 cookie web\n", 2000) // ~100 KB
	flip := func(s string, i int) string { return s[:i] + "#" + s[i+1:] }
	tests := []struct {
		name, file, content string
		want                bool
	}{
		{"same", big, big, true},
		{"both empty", "", "", true},
		{"differs in the first byte", big, flip(big, 0), false},
		{"differs at a piece's edge", big, flip(big, 32<<10), false},
		{"differs just before it", big, flip(big, 32<<10-1), false},
		{"differs in the last byte", big, flip(big, len(big)-1), false},
		{"file shorter", big[:len(big)-1], big, false},
		{"file longer", big, big[:len(big)-1], false},
		{"empty file", "", big, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "haproxy.cfg")
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := fileHolds(path, tc.content); got != tc.want {
				t.Errorf("fileHolds = %v, want %v", got, tc.want)
			}
		})
	}
	if fileHolds(filepath.Join(dir, "missing"), "") {
		t.Error("a missing file holds the empty content")
	}
}

// writeContent remembers the content last written by its hash (not a copy
// of ~1 MB): the same content again is not written (nor validated) again,
// any other is, and going back to an earlier content writes it.
func TestWriteContentRemembersByHash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	m := NewMetrics(nil)
	f := newConfigFile(&Config{ConfigFilePath: path, Binary: "true"}, nil, m) // `true -c -f file`: valid
	a, b := strings.Repeat("a\n", 1000), strings.Repeat("b\n", 1000)
	for i, step := range []struct {
		content string
		writes  float64
	}{{a, 1}, {a, 1}, {b, 2}, {b, 2}, {a, 3}} {
		if err := f.writeContent(t.Context(), step.content); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != step.content {
			t.Fatalf("step %d: the file holds %.10q…, want %.10q…", i, got, step.content)
		}
		if n := testutil.ToFloat64(m.ConfigWrites); n != step.writes {
			t.Errorf("step %d: %v writes, want %v", i, n, step.writes)
		}
	}
}
