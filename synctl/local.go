package synctl

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	cnruntime "github.com/haproxytech/client-native/v5/runtime"
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
//
// It goes through client-native's runtime client: for a handful of typed
// commands, one connection each costs nothing, and its parsing and state
// validation are what a one-off tool wants. (Synapse batches instead: see
// generators/haproxy.)
func runLocal(ctx context.Context, env Env, f *changeFlags, state string, ts []string) error {
	var rt cnruntime.SingleRuntime
	if err := rt.Init(f.socket, 0, 0); err != nil {
		return fmt.Errorf("local HAProxy: stats socket %s: %w", f.socket, err)
	}
	backends, err := localBackends(&rt)
	if err != nil {
		return err
	}
	var changes []localChange
	for _, backend := range backends {
		if len(f.scope()) > 0 && !slices.Contains(f.scope(), backend) {
			continue
		}
		servers, err := rt.GetServersState(backend)
		if err != nil {
			return fmt.Errorf("local HAProxy: show servers state %s: %w", backend, err)
		}
		for _, s := range servers {
			if s == nil {
				continue
			}
			for _, t := range ts {
				if s.Address == t || s.Name == t || strings.HasPrefix(s.Name, t+"_") {
					changes = append(changes, localChange{backend, s.Name, state})
					break
				}
			}
		}
	}
	if len(changes) == 0 {
		return fmt.Errorf("unknown host: no server of the local HAProxy matches %s; nothing changed", strings.Join(ts, ","))
	}
	if !f.dryRun {
		for _, c := range changes {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := rt.SetServerState(c.Backend, c.Server, c.State); err != nil {
				return fmt.Errorf("local HAProxy: %w", err)
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

// localBackends lists the backends (and listens) of the local HAProxy.
func localBackends(rt *cnruntime.SingleRuntime) ([]string, error) {
	out, err := rt.ExecuteWithResponse("show backend")
	if err != nil {
		return nil, fmt.Errorf("local HAProxy: show backend: %w", err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		names = append(names, l)
	}
	return names, nil
}
