package checks

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Exec is healthy when Command, run through /bin/sh -c, exits 0. When the
// timeout ends it, the whole process group is killed, so a check script's
// children cannot pile up.
type Exec struct {
	Command string
	name    string
}

// Name implements Check.
func (e *Exec) Name() string { return e.name }

// Check implements Check.
func (e *Exec) Check(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", e.Command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 100 * time.Millisecond
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		// The group may outlive the shell when the shell was killed first.
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	}
	return nil
}
