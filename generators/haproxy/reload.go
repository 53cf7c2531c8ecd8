package haproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"github.com/syncstack/syncstack/internal/atomicfile"
	"github.com/syncstack/syncstack/internal/backoff"
)

// reload makes HAProxy load the config file: through the master CLI when
// there is one (confirmed by the worker PID changing), else reload_command.
// The server state is saved first, so the new worker starts with every
// server's drain, maint and weight as they are now.
func (p *process) reload(ctx context.Context, why reloadNeed) error {
	start := time.Now()
	p.saveServerState(ctx)
	var err error
	if p.cfg.MasterSocketPath != "" {
		err = p.masterReload(ctx)
	} else {
		err = p.commandReload(ctx)
	}
	p.lastReload = time.Now()
	if err != nil {
		p.m.ReloadFailures.Inc()
		return err
	}
	p.m.Reloads.WithLabelValues(string(why.reason)).Inc()
	p.m.ReloadSeconds.Observe(time.Since(start).Seconds())
	p.log.Info("haproxy reloaded", "reason", why.String(), "took", time.Since(start))
	return nil
}

// ReloadReason says why HAProxy had to be reloaded; it is the reason label
// of synapse_haproxy_reloads_total.
type ReloadReason string

// The reasons for a reload. Membership, weight and drain never are one.
const (
	// ReloadStructure: the config's skeleton changed (a service, a
	// section line, global or defaults).
	ReloadStructure ReloadReason = "structure"
	// ReloadStaticBalance: the membership of a backend whose balance
	// algorithm HAProxy cannot change at runtime (static-rr, uri, ...).
	ReloadStaticBalance ReloadReason = "static_balance"
	// ReloadBackendMissing: the running HAProxy does not know a backend
	// the file has.
	ReloadBackendMissing ReloadReason = "backend_missing"
	// ReloadCookie: servers were added at runtime to a backend that
	// persists by cookie, and HAProxy 2.6 refuses `cookie` on `add server`
	// (and has no `set server ... cookie`): they serve at once, and get
	// their cookie, so that sticky sessions reach them, at this
	// (rate-limited) reload.
	ReloadCookie ReloadReason = "cookie"
)

// ReloadReasons are every reason: each is exported at 0 from the start, so
// a dashboard (and the demo's own hint) sees the series before the first
// reload, and tests sum over them.
var ReloadReasons = []ReloadReason{ReloadStructure, ReloadStaticBalance, ReloadBackendMissing, ReloadCookie}

// reloadNeed is a reload to do: why, and the detail a person reads in the
// log ("backend web membership").
type reloadNeed struct {
	reason ReloadReason
	detail string
}

func (n reloadNeed) needed() bool { return n.reason != "" }

func (n reloadNeed) String() string {
	if n.detail == "" {
		return string(n.reason)
	}
	return string(n.reason) + ": " + n.detail
}

// saveServerState writes `show servers state` to the server state file
// that the new worker loads.
func (p *process) saveServerState(ctx context.Context) {
	if p.cfg.ServerStateFile == "" || !on(p.cfg.DoSocket, true) {
		return
	}
	replies, err := p.rt.Run(ctx, "show servers state")
	if err != nil {
		p.log.Warn("could not save the server state before a reload", "err", err)
		return
	}
	if err := atomicfile.Write(p.cfg.ServerStateFile, []byte(replies[0]+"\n"), atomicfile.Options{Mode: configMode}); err != nil {
		p.log.Warn("could not save the server state before a reload", "err", err)
	}
}

// masterReload sends `reload` to the master CLI. While the master
// re-executes it refuses connections for tens of milliseconds (measured on
// 2.6: 35–65 ms), so both the request and the confirmation retry.
func (p *process) masterReload(ctx context.Context) error {
	old, err := p.workerPID(ctx)
	if err != nil {
		return fmt.Errorf("haproxy reload: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	retry := backoff.New(10*time.Millisecond, 50*time.Millisecond)
	for {
		err = p.sendReload(ctx)
		if err == nil || time.Now().After(deadline) {
			break
		}
		if retry.Wait(ctx) != nil {
			break // err stays the master CLI's own
		}
	}
	if err != nil {
		return fmt.Errorf("haproxy reload: master CLI %s: %w", p.cfg.MasterSocketPath, err)
	}
	deadline = time.Now().Add(p.confirmTimeout)
	for {
		pid, err := p.workerPID(ctx)
		if err == nil && pid != old {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy reload: worker PID still %d after %v (last error: %v): the new config was not loaded", old, p.confirmTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// sendReload writes `reload` and half-closes: HAProxy 2.6 answers only
// after the client half-closes, and prints nothing.
func (p *process) sendReload(ctx context.Context) error {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", p.cfg.MasterSocketPath)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "reload\n"); err != nil {
		return err
	}
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	_, err = io.ReadAll(c)
	return err
}

// workerPID returns the PID of the current (newest) worker from the master
// CLI's `show proc`.
func (p *process) workerPID(ctx context.Context) (int, error) {
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "unix", p.cfg.MasterSocketPath)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "show proc\n"); err != nil {
		return 0, err
	}
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	return parseShowProc(c)
}

// commandReload runs reload_command, then waits until the process that
// answers the stats socket has a new PID (every HAProxy reload, -sf or
// master-worker, ends with a new process serving it), so that a command
// that "succeeded" without loading anything is an error, not a silent no-op.
func (p *process) commandReload(ctx context.Context) error {
	old, oldErr := p.statsPID(ctx)
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "/bin/sh", "-c", p.cfg.ReloadCommand).CombinedOutput()
	if err != nil {
		return fmt.Errorf("haproxy reload: %q: %v: %s", p.cfg.ReloadCommand, err, strings.TrimSpace(string(out)))
	}
	if oldErr != nil || !on(p.cfg.DoSocket, true) {
		return nil // nothing to confirm with
	}
	deadline := time.Now().Add(p.confirmTimeout)
	for {
		pid, err := p.statsPID(ctx)
		if err == nil && pid != old {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("haproxy reload: %q ran, but the stats socket is still served by PID %d after %v (last error: %v): the new config was not loaded", p.cfg.ReloadCommand, old, p.confirmTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// statsPID is the PID of the process answering the stats socket.
func (p *process) statsPID(ctx context.Context) (int, error) {
	replies, err := p.rt.Run(ctx, "show info")
	if err != nil {
		return 0, err
	}
	return parseInfoPID(replies[0])
}
