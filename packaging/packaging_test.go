// Package packaging holds the Debian packages' files (nfpm configs, systemd
// units, maintainer scripts) and the test that builds, installs, checks and
// removes them on this machine.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var programs = []string{"nerve", "synapse", "synctl"}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func installed(pkg string) bool {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	return strings.Contains(string(out), "install ok installed")
}

// make dist from this tree, dpkg -i, the installed examples checked, the
// units verified, dpkg -r keeps only the conffiles, dpkg -P leaves nothing.
func TestDebianPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and installs packages")
	}
	if os.Geteuid() != 0 {
		t.Skip("installing packages needs root (CI runs as root)")
	}
	for _, p := range programs {
		if installed("syncstack-" + p) {
			t.Fatalf("syncstack-%s is already installed on this machine: not touching it", p)
		}
	}
	run(t, "make", "-C", "..", "dist")
	debs, _ := filepath.Glob("../dist/syncstack-*.deb")
	if len(debs) != len(programs) {
		t.Fatalf("make dist made %v", debs)
	}
	names := []string{"syncstack-nerve", "syncstack-synapse", "syncstack-synctl"}
	t.Cleanup(func() { exec.Command("dpkg", append([]string{"-P"}, names...)...).Run() })
	run(t, "dpkg", append([]string{"-i"}, debs...)...)

	for _, p := range []string{"nerve", "synapse"} {
		out := run(t, "/usr/bin/"+p, "-check-config", "-config", "/etc/syncstack/"+p+".yaml")
		if !strings.Contains(out, "OK") {
			t.Errorf("%s -check-config on the installed example: %s", p, out)
		}
	}
	if out := run(t, "/usr/bin/synctl", "--version"); !strings.HasPrefix(out, "synctl ") || strings.Contains(out, "unknown") {
		t.Errorf("synctl --version: %s", out)
	}
	run(t, "systemd-analyze", "verify", "/lib/systemd/system/nerve.service", "/lib/systemd/system/synapse.service")
	if out := run(t, "stat", "-c", "%U:%G %a", "/var/lib/syncstack"); strings.TrimSpace(out) != "syncstack:syncstack 750" {
		t.Errorf("state directory: %s", out)
	}
	if _, err := os.Stat("/usr/share/bash-completion/completions/synctl"); err != nil {
		t.Errorf("bash completion not installed: %v", err)
	}
	if out := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "syncstack-synapse"); !strings.Contains(out, "/etc/syncstack/synapse.yaml") {
		t.Errorf("synapse.yaml is not a conffile: %q", out)
	}

	run(t, "dpkg", append([]string{"-r"}, names...)...)
	for _, p := range programs {
		if _, err := os.Stat("/usr/bin/" + p); err == nil {
			t.Errorf("/usr/bin/%s left after dpkg -r", p)
		}
	}
	if _, err := os.Stat("/etc/syncstack/nerve.yaml"); err != nil {
		t.Errorf("dpkg -r removed a conffile: %v", err)
	}
	run(t, "dpkg", append([]string{"-P"}, names...)...)
	for _, path := range []string{"/etc/syncstack", "/var/lib/syncstack", "/lib/systemd/system/nerve.service", "/lib/systemd/system/synapse.service", "/usr/share/doc/syncstack-nerve"} {
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s left after dpkg -P", path)
		}
	}
	if err := exec.Command("getent", "passwd", "syncstack").Run(); err == nil {
		t.Error("the syncstack user is left after dpkg -P")
	}
}
