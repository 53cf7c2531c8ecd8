package watchers_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The base package stays small: no registry client and no generator, so a
// method (or a tool that only reads configs) pulls in only what it uses.
func TestBaseImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"/registry/etcd", "/registry/zookeeper", "/generators", "/watchers/"} {
			if strings.Contains(dep, "github.com/syncstack/syncstack"+banned) {
				t.Errorf("package watchers imports %s", dep)
			}
		}
	}
}
