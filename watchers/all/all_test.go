package all_test

import (
	"slices"
	"testing"

	"github.com/syncstack/syncstack/watchers"
	_ "github.com/syncstack/syncstack/watchers/all"
)

// Importing watchers/all, and only it, registers every built-in method.
func TestBuiltinsRegistered(t *testing.T) {
	want := []string{"dns", "etcd", "file", "plugin", "static", "zookeeper"}
	if got := watchers.Methods(); !slices.Equal(got, want) {
		t.Errorf("Methods() = %v, want %v", got, want)
	}
}
