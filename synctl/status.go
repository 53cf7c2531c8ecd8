package synctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/syncstack/syncstack/registry"
)

type statusReport struct {
	OverrideRevision int64                     `json:"override_revision"`
	Services         map[string][]backendState `json:"services"`
	Overrides        []registry.Override       `json:"overrides"`
	Synapses         []synapseStatus           `json:"synapses"`
}

type synapseStatus struct {
	ID       string    `json:"id"`
	Revision int64     `json:"revision"`
	InSync   bool      `json:"in_sync"`
	At       time.Time `json:"at"`
}

func runStatus(ctx context.Context, env Env, args []string) error {
	var c common
	fs := newFlagSet(env, "status", "status [SERVICE] [flags]")
	c.register(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("at most one SERVICE")
	}
	b, err := c.connect(env)
	if err != nil {
		return err
	}
	defer b.Close()
	now := env.Now()
	fl, err := readFleet(ctx, b, &c, now)
	if err != nil {
		return err
	}
	var scope []string
	if len(pos) == 1 {
		scope = pos
		if err := fl.checkScope(scope); err != nil {
			return err
		}
	}
	rep := statusReport{OverrideRevision: fl.overrides.Revision, Services: map[string][]backendState{}, Overrides: []registry.Override{}}
	for _, o := range fl.overrides.Overrides {
		if o.Active(now) { // an expired one holds nothing: every synapse ignores it
			rep.Overrides = append(rep.Overrides, o)
		}
	}
	for name, set := range fl.backends {
		if len(scope) > 0 && name != scope[0] {
			continue
		}
		states := []backendState{}
		for _, in := range set {
			states = append(states, stateOf(name, in, fl.overrides.Overrides, now))
		}
		rep.Services[name] = states
	}
	for _, a := range fl.acks {
		rep.Synapses = append(rep.Synapses, synapseStatus{ID: a.ID, Revision: a.Revision, InSync: a.Revision >= fl.overrides.Revision, At: a.At})
	}
	emit(env, &c, rep, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tHOST\tPORT\tNAME\tSTATE\tWEIGHT\tHELD BY\tREASON")
		for _, name := range sortedKeys(rep.Services) {
			if len(rep.Services[name]) == 0 {
				fmt.Fprintf(tw, "%s\t-\t-\t-\tno backends\t\t\t\n", name)
			}
			for _, s := range rep.Services[name] {
				weight := "-"
				if s.Weight != nil {
					weight = fmt.Sprint(*s.Weight)
				}
				reason := s.Reason
				if s.Expires != nil {
					reason += " (until " + *s.Expires + ")"
				}
				state := s.State
				if state == string(registry.StateReady) && !s.Serving {
					state = "out (weight 0)"
				}
				heldBy := "-"
				if s.HeldBy != "" {
					heldBy = s.HeldBy + " (" + s.By + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", name, s.Host, s.Port, s.Name, state, weight, heldBy, strings.TrimSpace(reason))
			}
		}
		tw.Flush()
		fmt.Fprintf(w, "\noverride revision %d; synapses:\n", rep.OverrideRevision)
		if len(rep.Synapses) == 0 {
			fmt.Fprintln(w, "  none acks overrides in this registry")
		}
		for _, s := range rep.Synapses {
			sync := "in sync"
			if !s.InSync {
				sync = "BEHIND"
			}
			fmt.Fprintf(w, "  %s: revision %d, %s (acked %s ago)\n", s.ID, s.Revision, sync, now.Sub(s.At).Round(time.Second))
		}
	})
	return nil
}

func runHistory(ctx context.Context, env Env, args []string) error {
	var c common
	fs := newFlagSet(env, "history", "history [--limit N] [flags]")
	c.register(fs)
	limit := fs.Int("limit", 50, "how many of the newest entries")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	b, err := c.connect(env)
	if err != nil {
		return err
	}
	defer b.Close()
	hist, err := b.History(ctx, *limit)
	if err != nil {
		return fmt.Errorf("registry unreachable: %w", err)
	}
	emit(env, &c, hist, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "AT\tBY\tACTION\tTARGETS\tSERVICES\tREASON\tEXPIRES\tREVISION")
		for _, h := range hist {
			exp := "-"
			if h.ExpiresAt != nil {
				exp = h.ExpiresAt.Format(time.RFC3339)
			}
			action := h.Action
			if h.Weight != nil {
				action += fmt.Sprintf(" %d", *h.Weight)
			}
			if h.Forced {
				action += " (forced)"
			}
			svcs := strings.Join(h.Services, ",")
			if svcs == "" {
				svcs = "all"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", h.At.Format(time.RFC3339), h.By, action, strings.Join(h.Targets, ","), svcs, h.Reason, exp, h.Revision)
		}
		tw.Flush()
	})
	return nil
}
