package testserver

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
)

// serverProcess is one server a test can kill, start again, freeze and
// thaw (ZooKeeper nodes, etcd members). The process runs in its own
// process group, which every signal targets, and dies with the test.
type serverProcess struct {
	mu     sync.Mutex
	cmd    *exec.Cmd
	frozen bool
}

// start starts argv unless the process runs, its output appended to
// logPath; it does not wait for it to serve. what names it in a failure.
func (p *serverProcess) start(t testing.TB, what, logPath string, argv ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := p.startLocked(cmd); err != nil {
		t.Fatalf("testserver: start %s: %v", what, err)
	}
}

// startLocked starts cmd; p.mu is held and no process runs.
func (p *serverProcess) startLocked(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd, p.frozen = cmd, false
	return nil
}

func (p *serverProcess) signal(sig syscall.Signal) { syscall.Kill(-p.cmd.Process.Pid, sig) }

// Kill stops the process with SIGKILL (thawing it first, so the signal is
// delivered at once) and waits for it to exit. Its data stays for a new
// start.
func (p *serverProcess) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.signal(syscall.SIGCONT)
	p.signal(syscall.SIGKILL)
	p.cmd.Wait()
	p.cmd, p.frozen = nil, false
}

// Freeze stops the process with SIGSTOP: its sockets stay open but nothing
// answers, as with a stalled disk or a hung host (a gray failure).
func (p *serverProcess) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.frozen {
		return
	}
	p.signal(syscall.SIGSTOP)
	p.frozen = true
}

// Thaw resumes a frozen process with SIGCONT.
func (p *serverProcess) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || !p.frozen {
		return
	}
	p.signal(syscall.SIGCONT)
	p.frozen = false
}

// Frozen reports whether the process is stopped by Freeze.
func (p *serverProcess) Frozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

// Running reports whether the process was started and not killed (a
// frozen process is running).
func (p *serverProcess) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}
