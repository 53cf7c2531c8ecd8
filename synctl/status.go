package synctl

import (
	"context"
	"flag"
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
	ID       string `json:"id"`
	Revision int64  `json:"revision"`
	InSync   bool   `json:"in_sync"`
	Live     bool   `json:"live"` // false: dead, only its catalog is left
	// Quarantined: servers its HAProxy refused, set aside ("service/server: reason").
	Quarantined []string `json:"quarantined,omitempty"`
	// Held: removals its panic threshold holds back ("service/server").
	Held []string  `json:"held,omitempty"`
	At   time.Time `json:"at"`
	// ServicesUnknown: live, but its ack leaves its services to a catalog
	// that is missing, so synctl cannot see what it serves (changes that
	// take backends out are refused without --force meanwhile).
	ServicesUnknown bool `json:"services_unknown,omitempty"`
}

func runStatus(ctx context.Context, env Env, args []string) error {
	var c common
	fs := newFlagSet(env, "status", "status [SERVICE] [--all] [flags]")
	c.register(fs)
	all := statusFlags(fs)
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
	rep, err := buildStatus(ctx, b, &c, now, pos)
	if err != nil {
		return err
	}
	emit(env, &c, rep, func(w io.Writer) { printStatus(w, rep, now, *all) })
	return nil
}

// statusFlags are status's own flags.
func statusFlags(fs *flag.FlagSet) (all *bool) {
	return fs.Bool("all", false, "list every backend and synapse (by default a large fleet shows summaries and only what is out or behind)")
}

// Past these, status lists only what needs a look unless --all.
const (
	listBackendsUpTo = 50
	listSynapsesUpTo = 20
	// listSynapsesNotInSync: how many of those behind or dead a large
	// fleet lists by name.
	listSynapsesNotInSync = 10
)

// buildStatus reads the fleet: every backend of the services in scope (all
// when empty) with what holds it out, the active overrides, and every
// synapse, live (it acks) or dead (only its catalog is left).
func buildStatus(ctx context.Context, b fleetReader, c *common, now time.Time, scope []string) (statusReport, error) {
	fl, err := readFleet(ctx, b, c, now)
	if err != nil {
		return statusReport{}, err
	}
	if err := fl.checkScope(scope); err != nil {
		return statusReport{}, err
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
	live := fl.live()
	unknown := map[string]bool{}
	for _, id := range fl.unknown() {
		unknown[id] = true
	}
	for _, a := range fl.acks {
		rep.Synapses = append(rep.Synapses, synapseStatus{ID: a.ID, Revision: a.Revision, InSync: a.Revision >= fl.overrides.Revision, Live: true, At: a.At, Quarantined: a.Quarantined, Held: a.Held, ServicesUnknown: unknown[a.ID]})
	}
	for _, cat := range fl.catalogs {
		if !live[cat.ID] {
			rep.Synapses = append(rep.Synapses, synapseStatus{ID: cat.ID, At: cat.At})
		}
	}
	return rep, nil
}

func (s synapseStatus) state() string {
	switch {
	case !s.Live:
		return "DEAD"
	case s.InSync:
		return "in sync"
	}
	return "BEHIND"
}

func printStatus(w io.Writer, rep statusReport, now time.Time, all bool) {
	total := 0
	for _, set := range rep.Services {
		total += len(set)
	}
	every := all || total <= listBackendsUpTo
	// Summaries first: one line per service.
	for _, name := range sortedKeys(rep.Services) {
		set := rep.Services[name]
		out := map[string]int{}
		serving := 0
		for _, s := range set {
			if s.Serving {
				serving++
			} else {
				out[s.stateText()]++
			}
		}
		line := fmt.Sprintf("%s: %d backends, %d serving", name, len(set), serving)
		for _, st := range sortedKeys(out) {
			line += fmt.Sprintf(", %d %s", out[st], st)
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tHOST\tPORT\tNAME\tSTATE\tWEIGHT\tHELD BY\tREASON")
	hidden := 0
	for _, name := range sortedKeys(rep.Services) {
		if len(rep.Services[name]) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tno backends\t\t\t\n", name)
		}
		for _, s := range rep.Services[name] {
			if !every && s.Serving && s.Weight == nil {
				hidden++
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", name, s.Host, s.Port, s.Name, s.stateText(), s.weightText(), s.heldByText(), s.reasonText())
		}
	}
	tw.Flush()
	if hidden > 0 {
		fmt.Fprintf(w, "(%d serving backends at their registered weight not listed; --all lists every one)\n", hidden)
	}
	if rep.OverrideRevision == 0 {
		fmt.Fprintf(w, "\nno override written yet; synapses (revision: the registry revision each last applied):\n")
	} else {
		fmt.Fprintf(w, "\noverride revision %d (the registry revision of the last override change); synapses:\n", rep.OverrideRevision)
	}
	if len(rep.Synapses) == 0 {
		fmt.Fprintln(w, "  none acks overrides in this registry")
	}
	counts := map[string]int{}
	for _, s := range rep.Synapses {
		counts[s.state()]++
		if s.ServicesUnknown {
			counts["unknown"]++
		}
	}
	everySynapse := all || len(rep.Synapses) <= listSynapsesUpTo
	if !everySynapse {
		fmt.Fprintf(w, "  %d synapses: %d in sync, %d BEHIND, %d DEAD, %d with SERVICES UNKNOWN (listed: those not in sync; --all lists every one)\n",
			len(rep.Synapses), counts["in sync"], counts["BEHIND"], counts["DEAD"], counts["unknown"])
	}
	listed := 0
	for _, s := range rep.Synapses {
		if !everySynapse && s.state() == "in sync" {
			continue
		}
		if listed++; !everySynapse && listed > listSynapsesNotInSync {
			fmt.Fprintf(w, "  … and %d more not in sync (--all lists every one)\n", len(rep.Synapses)-counts["in sync"]-listSynapsesNotInSync)
			break
		}
		if !s.Live {
			fmt.Fprintf(w, "  %s: DEAD (no ack; its catalog was written %s ago)\n", s.ID, now.Sub(s.At).Round(time.Second))
			continue
		}
		fmt.Fprintf(w, "  %s: revision %d, %s (acked %s ago)\n", s.ID, s.Revision, s.state(), now.Sub(s.At).Round(time.Second))
	}
	// Synapses whose services synctl cannot see: listed (up to a bound),
	// they block changes that take backends out.
	unknown := 0
	for _, s := range rep.Synapses {
		if !s.ServicesUnknown {
			continue
		}
		if unknown++; !all && unknown > listSynapsesNotInSync {
			continue
		}
		fmt.Fprintf(w, "  %s SERVICES UNKNOWN (its acks leave its services to a catalog that is missing; drains, maint and weight 0 are refused without --allow-unknown until it is back)\n", s.ID)
	}
	if !all && unknown > listSynapsesNotInSync {
		fmt.Fprintf(w, "  … and %d more with SERVICES UNKNOWN (--all lists every one)\n", unknown-listSynapsesNotInSync)
	}
	// Servers a synapse's HAProxy refused: always listed, they need a look.
	for _, s := range rep.Synapses {
		for _, q := range s.Quarantined {
			fmt.Fprintf(w, "  %s QUARANTINED %s\n", s.ID, q)
		}
	}
	// Removals a synapse's panic threshold holds back: the registry (or
	// an override) takes more out at once than the threshold allows.
	held := map[string]int{}
	for _, s := range rep.Synapses {
		for _, h := range s.Held {
			fmt.Fprintf(w, "  %s HOLDING %s (panic threshold: the registry takes it out with too many others at once)\n", s.ID, h)
			svc, _, _ := strings.Cut(h, "/")
			held[svc]++
		}
	}
	for _, svc := range sortedKeys(held) {
		fmt.Fprintf(w, "  %s: %d removals held; if they are intended: synctl confirm %s --reason ...\n", svc, held[svc], svc)
	}
	for _, o := range rep.Overrides {
		if o.State == registry.StateConfirm {
			until := "-"
			if o.ExpiresAt != nil {
				until = o.ExpiresAt.Format(time.RFC3339)
			}
			fmt.Fprintf(w, "removals in %s confirmed by %s until %s: %s\n", strings.Join(o.Services, ","), o.By, until, o.Reason)
		}
	}
}

func (s backendState) stateText() string {
	if s.State == string(registry.StateReady) && !s.Serving {
		return "out (weight 0)"
	}
	return s.State
}

func (s backendState) weightText() string {
	if s.Weight == nil {
		return "-"
	}
	return fmt.Sprint(*s.Weight)
}

func (s backendState) heldByText() string {
	if s.HeldBy == "" {
		return "-"
	}
	return s.HeldBy + " (" + s.By + ")"
}

func (s backendState) reasonText() string {
	r := s.Reason
	if s.Expires != nil {
		r += " (until " + *s.Expires + ")"
	}
	return strings.TrimSpace(r)
}

// historyFlags are history's own flags.
func historyFlags(fs *flag.FlagSet) (limit *int) {
	return fs.Int("limit", 50, "how many of the newest entries")
}

func runHistory(ctx context.Context, env Env, args []string) error {
	var c common
	fs := newFlagSet(env, "history", "history [--limit N] [flags]")
	c.register(fs)
	limit := historyFlags(fs)
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
