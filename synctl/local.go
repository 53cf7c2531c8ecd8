package synctl

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"
)

// localChange is one server changed on the local HAProxy.
type localChange struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	State   string `json:"state"`
}

// runLocal is plan B: set the matching servers of the local HAProxy to
// state through its stats socket, with no registry. Synapse will undo it at
// its next apply if the registry says otherwise, so use it when the
// registry (or synapse) is down.
func runLocal(ctx context.Context, env Env, f *changeFlags, state string, ts []string) error {
	out, err := socketCommand(f.socket, "show servers state")
	if err != nil {
		return fmt.Errorf("local HAProxy: %w", err)
	}
	var changes []localChange
	for _, l := range strings.Split(out, "\n") {
		fl := strings.Fields(l)
		if len(fl) < 19 || strings.HasPrefix(l, "#") {
			continue
		}
		backend, server, addr := fl[1], fl[3], fl[4]
		if len(f.scope()) > 0 && !slices.Contains(f.scope(), backend) {
			continue
		}
		for _, t := range ts {
			if addr == t || strings.HasPrefix(server, t+"_") || server == t {
				changes = append(changes, localChange{backend, server, state})
			}
		}
	}
	if len(changes) == 0 {
		return fmt.Errorf("unknown host: no server of the local HAProxy matches %s; nothing changed", strings.Join(ts, ","))
	}
	if !f.dryRun {
		for _, c := range changes {
			reply, err := socketCommand(f.socket, fmt.Sprintf("set server %s/%s state %s", c.Backend, c.Server, c.State))
			if err != nil {
				return fmt.Errorf("local HAProxy: %w", err)
			}
			if r := strings.TrimSpace(reply); r != "" {
				return fmt.Errorf("local HAProxy: set server %s/%s: %s", c.Backend, c.Server, r)
			}
		}
	}
	emit(env, &f.common, map[string]any{"local": true, "dry_run": f.dryRun, "changes": changes}, func(w io.Writer) {
		verb := "set"
		if f.dryRun {
			verb = "dry run: would set"
		}
		for _, c := range changes {
			fmt.Fprintf(w, "%s %s/%s to %s on the local HAProxy\n", verb, c.Backend, c.Server, c.State)
		}
	})
	return nil
}

func socketCommand(socket, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}
