package testserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CheckHAProxy fails the test when the haproxy binary is missing.
func CheckHAProxy(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatalf("testserver: haproxy is not installed: apt-get install haproxy (make test does it)")
	}
}

// KillHAProxyAtCleanup kills, in t.Cleanup, the master-worker HAProxy whose
// PID file is pidFile (written by a synapse that started it), and waits for
// it and its workers to exit.
func KillHAProxyAtCleanup(t testing.TB, pidFile string) {
	t.Cleanup(func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			return
		}
		children := childrenOf(pid)
		syscall.Kill(pid, syscall.SIGKILL)
		for _, c := range children {
			syscall.Kill(c, syscall.SIGKILL)
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if syscall.Kill(pid, 0) != nil {
				return
			}
		}
	})
}

func childrenOf(pid int) []int {
	matches, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(m))); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
