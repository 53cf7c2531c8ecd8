package synctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// defaultConfirmFor is how long a confirmation lets removals through when
// --for is not given: long enough for a scale-in or a migration to land,
// short enough that the guard is soon back.
const defaultConfirmFor = 10 * time.Minute

// registerConfirm registers confirm's flags (the command and completion
// share them).
func (f *changeFlags) registerConfirm(fs *flag.FlagSet) {
	f.common.register(fs)
	fs.StringVar(&f.reason, "reason", "", "why the removal is intended (required; kept in the record and the audit trail)")
	fs.BoolVar(&f.wait, "wait", false, "wait until every live synapse has applied the confirmation")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "with --wait: how long to wait")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print what would be written, and write nothing")
	fs.DurationVar(&f.forDur, "for", defaultConfirmFor, "how long the confirmation lets removals through (it expires on its own)")
}

// runConfirm writes an operator's confirmation: the removals that the
// synapses' panic threshold holds back in SERVICE[,SERVICE...] are
// intended. Every synapse then applies them, and every further removal in
// those services until the confirmation expires; it is written through the
// overrides (state confirm, a key of its own) and kept in the audit trail.
func runConfirm(ctx context.Context, env Env, args []string) error {
	var f changeFlags
	fs := newFlagSet(env, "confirm", "confirm SERVICE[,SERVICE...] --reason TEXT [--for 10m] [--wait] [--dry-run] [flags]")
	f.registerConfirm(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one SERVICE[,SERVICE...] argument, got %d", len(pos))
	}
	services := splitList(pos[0])
	if len(services) == 0 {
		return usagef("no service given")
	}
	for _, s := range services {
		if err := registry.ValidateName(s); err != nil {
			return usagef("service %q: %v", s, err)
		}
	}
	if strings.TrimSpace(f.reason) == "" {
		return usagef("--reason is required: say why the removal is intended")
	}
	if err := registry.ValidateText(f.reason, registry.MaxReasonLen); err != nil {
		return usagef("--reason: %v", err)
	}
	if f.forDur <= 0 {
		return usagef("--for %v: want a positive duration such as 10m", f.forDur)
	}
	f.services = strings.Join(services, ",")
	b, fl, now, err := f.open(ctx, env)
	if err != nil {
		return err
	}
	defer b.Close()
	exp := now.Add(f.forDur).UTC()
	o := registry.Override{Target: services[0], State: registry.StateConfirm, Services: services, Reason: f.reason, By: env.By, At: now.UTC(), ExpiresAt: &exp}
	if err := o.Validate(); err != nil {
		return usagef("%v", err)
	}
	res := result{Action: "confirm", Targets: services, DryRun: f.dryRun, Plan: []capacity{}}
	held := heldIn(fl.acks, services)
	if f.dryRun {
		emit(env, &f.common, res, func(w io.Writer) {
			fmt.Fprintf(w, "dry run: confirm %s until %s would let go %d held removals:\n", strings.Join(services, ","), exp.Format(time.RFC3339), len(held))
			for _, h := range held {
				fmt.Fprintf(w, "  %s\n", h)
			}
			fmt.Fprintln(w, "nothing written")
		})
		return nil
	}
	rev, err := b.PutOverride(ctx, o)
	if err != nil {
		return fmt.Errorf("writing the confirmation: %w", err)
	}
	res.Written, res.Revision = []string{o.Key()}, rev
	h := registry.HistoryEntry{At: now.UTC(), By: env.By, Action: "confirm", Targets: services, Services: services, Reason: f.reason, ExpiresAt: &exp, Revision: rev}
	if len(held) > 0 {
		fmt.Fprintf(env.Stderr, "synctl: letting go %d held removals: %s\n", len(held), strings.Join(held, ", "))
	}
	return finish(ctx, env, b, &f, res, h)
}

// heldIn lists what the live synapses hold back in services ("synapse:
// service/server").
func heldIn(acks []registry.Ack, services []string) []string {
	var out []string
	for _, a := range acks {
		for _, h := range a.Held {
			svc, _, _ := strings.Cut(h, "/")
			for _, s := range services {
				if s == svc {
					out = append(out, a.ID+": "+h)
				}
			}
		}
	}
	return out
}
