package secretfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode    os.FileMode
		exposed bool
	}{
		{0o600, false},
		{0o400, false},
		{0o640, false}, // root:syncstack, read by the group
		{0o644, true},
		{0o604, true},
		{0o660, true}, // the group could replace it
		{0o602, true},
		{0o601, true},
		{0o666, true},
	} {
		p := filepath.Join(dir, "secret")
		os.Remove(p)
		if err := os.WriteFile(p, []byte("pw"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, tc.mode); err != nil { // not subject to umask
			t.Fatal(err)
		}
		err := Check(p)
		if got := errors.Is(err, ErrExposed); got != tc.exposed {
			t.Errorf("mode %04o: err %v, want exposed=%v", tc.mode, err, tc.exposed)
		}
		if tc.exposed && !strings.Contains(err.Error(), p) {
			t.Errorf("mode %04o: error %q does not name the file", tc.mode, err)
		}
		data, err := Read(p)
		if tc.exposed != (err != nil) || (!tc.exposed && string(data) != "pw") {
			t.Errorf("Read mode %04o: %q, %v", tc.mode, data, err)
		}
	}
	if err := Check(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrExposed) {
		t.Errorf("missing file: %v", err)
	}
	if err := Check(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}
