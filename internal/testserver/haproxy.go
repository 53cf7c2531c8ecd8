package testserver

import (
	"fmt"
	"io"
	"net"
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
	t.Cleanup(func() { KillHAProxy(pidFile) })
}

// KillHAProxy kills the master-worker HAProxy of pidFile, master and
// workers, with SIGKILL, and waits until they are gone.
func KillHAProxy(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	procs := append(childrenOf(pid), pid)
	for _, p := range procs {
		syscall.Kill(p, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		alive := false
		for _, p := range procs {
			alive = alive || Alive(p)
		}
		if !alive {
			return
		}
	}
}

// Alive reports whether pid runs: a zombie (a daemon whose reaper is slow,
// or absent in a container) is dead.
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
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

// HAProxyCommand sends one command to a HAProxy stats or master socket and
// returns the answer.
func HAProxyCommand(socket, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// HAProxyWorkerPID returns the current worker's PID from the master CLI
// (retrying for a second: the master refuses connections while it reloads).
func HAProxyWorkerPID(t testing.TB, masterSocket string) int {
	t.Helper()
	var pid int
	var err error
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		if pid, err = TryHAProxyWorkerPID(masterSocket); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TryHAProxyWorkerPID is the current worker's PID from the master CLI's
// `show proc`, once.
func TryHAProxyWorkerPID(masterSocket string) (int, error) {
	out, err := HAProxyCommand(masterSocket, "show proc")
	if err != nil {
		return 0, fmt.Errorf("show proc: %w", err)
	}
	inWorkers := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "# workers"):
			inWorkers = true
		case strings.HasPrefix(l, "#"):
			inWorkers = false
		case inWorkers:
			if f := strings.Fields(l); len(f) >= 2 && f[1] == "worker" {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("show proc: no worker in %q", out)
}

// ServerState is one server of `show servers state`.
type ServerState struct {
	Addr   string
	Port   int
	Admin  int // SRV_ADMF_* bits: 0x01 maint, 0x08 drain
	Weight int
}

// HAProxyServers returns backend's servers by name.
func HAProxyServers(t testing.TB, statsSocket, backend string) map[string]ServerState {
	t.Helper()
	res, err := TryHAProxyServers(statsSocket, backend)
	if err != nil {
		t.Fatalf("show servers state: %v", err)
	}
	return res
}

// TryHAProxyServers is HAProxyServers returning the error.
func TryHAProxyServers(statsSocket, backend string) (map[string]ServerState, error) {
	out, err := HAProxyCommand(statsSocket, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	res := map[string]ServerState{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 19 || strings.HasPrefix(l, "#") {
			continue
		}
		admin, _ := strconv.Atoi(f[6])
		weight, _ := strconv.Atoi(f[7])
		port, _ := strconv.Atoi(f[18])
		res[f[3]] = ServerState{Addr: f[4], Port: port, Admin: admin, Weight: weight}
	}
	return res, nil
}
