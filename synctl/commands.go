package synctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// changeFlags are the flags of the commands that change the fleet.
type changeFlags struct {
	common
	services string
	reason   string
	wait     bool
	timeout  time.Duration
	dryRun   bool
	local    bool
	socket   string
	forDur   time.Duration
	force    bool
	// allowUnknown: go ahead although some live synapses' services are
	// unknown, with the limits on the services synctl sees.
	allowUnknown bool
	minUp        int
	maxDrained   int
	notify       *notifier // nil: no webhooks
}

func (f *changeFlags) register(fs *flag.FlagSet, safety bool) {
	f.common.register(fs)
	fs.StringVar(&f.services, "service", "", "limit to these services (comma-separated)")
	fs.StringVar(&f.reason, "reason", "", "why (kept in the override and the audit trail)")
	fs.BoolVar(&f.wait, "wait", false, "wait until every live synapse has applied the change")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "with --wait: how long to wait")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the plan and write nothing")
	fs.BoolVar(&f.local, "local", false, "act on the local HAProxy through its stats socket (when the registry is down)")
	fs.StringVar(&f.socket, "socket", "/run/haproxy/admin.sock", "with --local: the HAProxy stats socket")
	if safety {
		fs.DurationVar(&f.forDur, "for", 0, "expire the override after this long (a forgotten drain heals itself)")
		f.registerSafety(fs)
	}
}

// registerSafety adds the safety limits: every command that can take a
// backend out of traffic (drain, maint, and a weight of 0) has them.
func (f *changeFlags) registerSafety(fs *flag.FlagSet) {
	fs.BoolVar(&f.force, "force", false, "skip the safety limits")
	fs.BoolVar(&f.allowUnknown, "allow-unknown", false, "go ahead although some live synapses' services are unknown (their catalog is missing); the limits still apply to the services synctl sees")
	fs.IntVar(&f.minUp, "min-up", 1, "refuse when a service would keep fewer ready backends")
	fs.IntVar(&f.maxDrained, "max-drained", 50, "refuse when more than this % of a service's backends would be out")
}

func (f *changeFlags) scope() []string { return splitList(f.services) }

// parseTargets parses the flags of command and its one HOST[,HOST...]
// argument.
func (f *changeFlags) parseTargets(env Env, command string, safety bool, args []string) ([]string, error) {
	fs := newFlagSet(env, command, command+" HOST[,HOST...] [flags]")
	f.register(fs, safety)
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 1 {
		return nil, usagef("want exactly one HOST[,HOST...] argument, got %d", len(pos))
	}
	var forErr error
	fs.Visit(func(fl *flag.Flag) {
		// --for 0s would read as "no expiry": a permanent drain by accident.
		if fl.Name == "for" && f.forDur <= 0 {
			forErr = usagef("--for %v: want a positive duration such as 30m or 2h (leave --for out for no expiry)", f.forDur)
		}
	})
	if forErr != nil {
		return nil, forErr
	}
	return targets(pos[0])
}

// open connects to the registry and reads the fleet a change is planned
// against; the caller closes b.
func (f *changeFlags) open(ctx context.Context, env Env) (b registry.Backend, fl *fleet, now time.Time, err error) {
	if b, err = f.connect(env); err != nil {
		return nil, nil, now, err
	}
	now = env.Now()
	if fl, err = readFleet(ctx, b, &f.common, now); err == nil {
		err = fl.checkScope(f.scope())
	}
	if err != nil {
		b.Close()
		return nil, nil, now, err
	}
	if len(f.webhooks) > 0 && !f.dryRun {
		f.notify = newNotifier(f.webhooks, env.Stderr)
	}
	fl.expire(ctx, env, b, now, f.notify)
	return b, fl, now, nil
}

// expire removes the overrides whose --for has run out and records each
// expiry in the audit trail, dated when it expired. Every synapse already
// ignores them; this is bookkeeping, done by the next change made with
// synctl, so it never fails that change.
func (f *fleet) expire(ctx context.Context, env Env, b expirer, now time.Time, notify *notifier) {
	var kept []registry.Override
	for _, o := range f.overrides.Overrides {
		if o.Active(now) {
			kept = append(kept, o)
			continue
		}
		rev, err := b.DeleteOverride(ctx, o.Key())
		h := registry.HistoryEntry{At: o.ExpiresAt.UTC(), By: o.By, Action: "expired",
			Targets: []string{o.Target}, Services: o.Services, Weight: o.Weight, Reason: o.Reason, ExpiresAt: o.ExpiresAt, Revision: rev}
		if err == nil {
			err = b.AppendHistory(ctx, h)
			h.Action = string(o.State)
			notify.post(newEvent("expired", h, result{}))
		}
		if err != nil {
			fmt.Fprintf(env.Stderr, "synctl: warning: expired override %s not cleaned up: %v\n", o.Key(), err)
			kept = append(kept, o)
		}
	}
	f.overrides.Overrides = kept
}

// targets validates HOST[,HOST...].
func targets(arg string) ([]string, error) {
	ts := splitList(arg)
	if len(ts) == 0 {
		return nil, usagef("no host given")
	}
	for _, t := range ts {
		if registry.ValidateName(t) != nil && registry.ValidateHost(t) != nil {
			return nil, usagef("%q is not a host name, address or instance name", t)
		}
	}
	return ts, nil
}

// result is what a change command reports.
type result struct {
	Action   string     `json:"action"`
	Targets  []string   `json:"targets"`
	DryRun   bool       `json:"dry_run"`
	Plan     []capacity `json:"plan"`
	Written  []string   `json:"written,omitempty"`
	Deleted  []string   `json:"deleted,omitempty"`
	Revision int64      `json:"revision,omitempty"`
	Acked    []string   `json:"acked,omitempty"`
	Missing  []string   `json:"not_acked,omitempty"`
	// Dead: synapses whose catalog is left but which no longer ack: not
	// waited for, and named so nobody takes "every live synapse" for all.
	Dead []string `json:"dead,omitempty"`
	// Unknown: live synapses whose services synctl cannot see (the ack
	// names none and there is no catalog under its id).
	Unknown []string `json:"services_unknown,omitempty"`
}

func runSet(ctx context.Context, env Env, action string, state registry.OverrideState, args []string) error {
	var f changeFlags
	ts, err := f.parseTargets(env, action, true, args)
	if err != nil {
		return err
	}
	if err := f.checkLimits(); err != nil {
		return err
	}
	if err := registry.ValidateText(f.reason, registry.MaxReasonLen); err != nil {
		return usagef("--reason: %v", err)
	}
	for _, s := range f.scope() {
		if err := registry.ValidateName(s); err != nil {
			return usagef("--service: %v", err)
		}
	}
	if f.local {
		return runLocal(ctx, env, &f, string(state), ts)
	}
	b, fl, now, err := f.open(ctx, env)
	if err != nil {
		return err
	}
	defer b.Close()
	var adds []registry.Override
	for _, t := range ts {
		if len(fl.matching(t, f.scope())) == 0 {
			return fmt.Errorf("unknown host %q: no backend of %s has that host or name; nothing written", t, scopeName(f.scope(), fl))
		}
		o := registry.Override{Target: t, State: state, Services: f.scope(), Reason: f.reason, By: env.By, At: now.UTC()}
		if f.forDur > 0 {
			exp := now.Add(f.forDur).UTC()
			o.ExpiresAt = &exp
		}
		adds = append(adds, o)
	}
	after := replaceKeys(fl.overrides.Overrides, adds, nil)
	res := result{Action: action, Targets: ts, DryRun: f.dryRun, Plan: fl.plan(fl.overrides.Overrides, after, nil, now), Dead: fl.dead(), Unknown: fl.unknown()}
	if err := refuse(env, &f, res, action+" "+strings.Join(ts, ","), true); err != nil {
		return err
	}
	if f.dryRun {
		reportDryRun(env, &f, res, fmt.Sprintf("%s %s would change", action, strings.Join(ts, ",")))
		return nil
	}
	for _, o := range adds {
		rev, err := b.PutOverride(ctx, o)
		if err != nil {
			return fmt.Errorf("writing the override for %s: %w", o.Target, err)
		}
		res.Written = append(res.Written, o.Key())
		res.Revision = max(res.Revision, rev)
	}
	h := registry.HistoryEntry{At: now.UTC(), By: env.By, Action: action, Targets: ts, Services: f.scope(), Reason: f.reason, Revision: res.Revision, Forced: f.force}
	if len(adds) > 0 {
		h.ExpiresAt = adds[0].ExpiresAt
	}
	return finish(ctx, env, b, &f, res, h)
}

func (f *changeFlags) checkLimits() error {
	if f.maxDrained < 0 || f.maxDrained > 100 || f.minUp < 0 {
		return usagef("--max-drained takes 0..100 and --min-up a count")
	}
	return nil
}

// refuse reports a plan the safety limits refuse (printing it), or nil.
// takesOut: the change takes its targets out (a drain, maint, a weight of
// 0), wherever they are served: in the services synctl cannot see too, so
// it is refused while any live synapse's services are unknown.
func refuse(env Env, f *changeFlags, res result, what string, takesOut bool) error {
	refusal := safety(res.Plan, f.minUp, f.maxDrained)
	if len(res.Unknown) > 0 && takesOut && !f.allowUnknown {
		unknown := fmt.Sprintf("the services of synapses %s are unknown (their acks leave them to a catalog that is missing: deleted by hand?), so the limits cannot cover them; a running synapse writes its catalog again within %.0f minutes, and --allow-unknown goes ahead with the limits on the services synctl sees", strings.Join(res.Unknown, ", "), registry.CatalogCheck.Minutes())
		refusal = strings.TrimPrefix(refusal+"; "+unknown, "; ")
	}
	if refusal != "" && f.force && !f.dryRun {
		// Forced past synctl's limits, a change can still be past the
		// synapses' own guard: say what they will do with it.
		fmt.Fprintf(env.Stderr, "synctl: warning: forced past the safety limits (%s); every synapse still holds back removals beyond its panic threshold (default 50 %% of a service at once) until the registry recovers or: synctl confirm SERVICE --reason ...\n", refusal)
	}
	if refusal == "" || f.force {
		return nil
	}
	if f.output != "json" { // JSON carries the plan in the error object
		fmt.Fprintf(env.Stdout, "%s would change:\n", what)
		printPlan(env.Stdout, res.Plan)
	}
	return refusalError{fmt.Sprintf("refused: %s (use --force to override); nothing written", refusal), res.Plan}
}

// reportDryRun prints a plan that was not written.
func reportDryRun(env Env, f *changeFlags, res result, what string) {
	emit(env, &f.common, res, func(w io.Writer) {
		fmt.Fprintf(w, "dry run: %s:\n", what)
		printPlan(w, res.Plan)
		fmt.Fprintln(w, "nothing written")
	})
}

// safety returns why a plan must be refused, or "".
func safety(plan []capacity, minUp, maxDrained int) string {
	var why []string
	for _, c := range plan {
		// Only a change that takes backends out can be refused: restoring
		// one (or a weight change among serving ones) is always allowed.
		if len(c.Changed) == 0 || c.Total == 0 || c.ReadyAfter >= c.ReadyBefore {
			continue
		}
		if c.ReadyAfter < minUp {
			why = append(why, fmt.Sprintf("service %s would have %d ready backends (--min-up %d)", c.Service, c.ReadyAfter, minUp))
		}
		if out := c.Total - c.ReadyAfter; out*100 > maxDrained*c.Total {
			why = append(why, fmt.Sprintf("service %s would have %d of %d backends out (--max-drained %d%%)", c.Service, out, c.Total, maxDrained))
		}
	}
	return strings.Join(why, "; ")
}

// replaceKeys returns current with the overrides of the same keys as adds
// replaced, and the keys in del removed.
func replaceKeys(current, adds []registry.Override, del []string) []registry.Override {
	drop := map[string]bool{}
	for _, o := range adds {
		drop[o.Key()] = true
	}
	for _, k := range del {
		drop[k] = true
	}
	var out []registry.Override
	for _, o := range current {
		if !drop[o.Key()] {
			out = append(out, o)
		}
	}
	return append(out, adds...)
}

func scopeName(scope []string, fl *fleet) string {
	if len(scope) > 0 {
		return "service " + strings.Join(scope, ", ")
	}
	if len(fl.services) == 0 {
		return "any known service (no synapse acks overrides and --config lists no services)"
	}
	return "any service (" + strings.Join(sortedKeys(fl.services), ", ") + ")"
}

// finish records the change in the audit trail, waits when asked, and
// reports.
func finish(ctx context.Context, env Env, b finisher, f *changeFlags, res result, h registry.HistoryEntry) error {
	if err := b.AppendHistory(ctx, h); err != nil {
		fmt.Fprintf(env.Stderr, "synctl: warning: the change is written but the audit trail is not: %v\n", err)
	}
	defer f.notify.wait()
	f.notify.post(newEvent("written", h, res))
	var waitErr error
	if f.wait {
		res.Acked, res.Missing, waitErr = waitAcks(ctx, env, b, res.Revision, f.timeout, f.output == "text" && env.Terminal)
		kind := "applied"
		if waitErr != nil {
			kind = "not_applied"
		}
		f.notify.post(newEvent(kind, h, res))
	}
	emit(env, &f.common, res, func(w io.Writer) {
		fmt.Fprintf(w, "%s %s: written at revision %d\n", res.Action, strings.Join(res.Targets, ","), res.Revision)
		printPlan(w, res.Plan)
		if f.wait && waitErr == nil {
			fmt.Fprintf(w, "applied by every live synapse (%d)\n", len(res.Acked))
		}
		if f.wait && len(res.Dead) > 0 {
			fmt.Fprintf(w, "not waited for: %s (no ack: dead or stopped; its HAProxy applies nothing)\n", strings.Join(res.Dead, ", "))
		}
		if len(res.Unknown) > 0 {
			fmt.Fprintf(w, "services unknown: %s (the ack names none and there is no catalog under its id: synctl cannot see what it serves)\n", strings.Join(res.Unknown, ", "))
		}
	})
	return waitErr
}

// waitAcks waits until every live synapse (one with an ack) has applied
// rev; on timeout it names the ones that have not. With progress (a
// terminal), one line is kept up to date: how many applied, and the
// slowest by name.
func waitAcks(ctx context.Context, env Env, b registry.AckReader, rev int64, timeout time.Duration, progress bool) (acked, missing []string, err error) {
	deadline := time.Now().Add(timeout)
	var last string
	defer func() {
		if progress && last != "" {
			fmt.Fprintln(env.Stderr)
		}
	}()
	for {
		acks, err := b.Acks(ctx)
		if err == nil {
			acked, missing = nil, nil
			var behind []registry.Ack
			for _, a := range acks {
				if a.Revision >= rev {
					acked = append(acked, a.ID)
				} else {
					behind = append(behind, a)
				}
			}
			// The slowest first: the furthest behind, then by name.
			sort.Slice(behind, func(i, j int) bool {
				if behind[i].Revision != behind[j].Revision {
					return behind[i].Revision < behind[j].Revision
				}
				return behind[i].ID < behind[j].ID
			})
			for _, a := range behind {
				missing = append(missing, a.ID)
			}
			if progress {
				line := fmt.Sprintf("waiting for revision %d: applied by %d/%d%s", rev, len(acked), len(acks), slowest(missing))
				if line != last {
					fmt.Fprintf(env.Stderr, "\r\x1b[K%s", line)
					last = line
				}
			}
			if len(acks) > 0 && len(missing) == 0 {
				return acked, nil, nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil && len(acked)+len(missing) == 0 {
				return nil, nil, fmt.Errorf("no synapse acks overrides in this registry: nothing applies this change")
			}
			return acked, missing, fmt.Errorf("timed out after %v: not applied by %d: %s", timeout, len(missing), strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return acked, missing, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// slowest names up to three of the synapses still behind.
func slowest(missing []string) string {
	switch {
	case len(missing) == 0:
		return ""
	case len(missing) <= 3:
		return "; waiting on " + strings.Join(missing, ", ")
	}
	return fmt.Sprintf("; waiting on %s and %d more", strings.Join(missing[:3], ", "), len(missing)-3)
}

func runAddToLB(ctx context.Context, env Env, args []string) error {
	var f changeFlags
	ts, err := f.parseTargets(env, "add-to-lb", false, args)
	if err != nil {
		return err
	}
	if f.local {
		return runLocal(ctx, env, &f, "ready", ts)
	}
	b, fl, now, err := f.open(ctx, env)
	if err != nil {
		return err
	}
	defer b.Close()
	del, err := fl.holdingOut(ts, f.scope())
	if err != nil {
		return err
	}
	after := replaceKeys(fl.overrides.Overrides, nil, del)
	res := result{Action: "add-to-lb", Targets: ts, DryRun: f.dryRun, Plan: fl.plan(fl.overrides.Overrides, after, nil, now), Deleted: del, Dead: fl.dead(), Unknown: fl.unknown()}
	if f.dryRun {
		reportDryRun(env, &f, res, fmt.Sprintf("add-to-lb %s would remove %s and change", strings.Join(ts, ","), orNone(del)))
		return nil
	}
	if len(del) == 0 {
		emit(env, &f.common, res, func(w io.Writer) {
			fmt.Fprintf(w, "%s: no drain or maint override; nothing to do\n", strings.Join(ts, ","))
		})
		return nil
	}
	for _, k := range del {
		rev, err := b.DeleteOverride(ctx, k)
		if err != nil {
			return fmt.Errorf("removing override %s: %w", k, err)
		}
		res.Revision = max(res.Revision, rev)
	}
	return finish(ctx, env, b, &f, res, registry.HistoryEntry{At: now.UTC(), By: env.By, Action: "add-to-lb", Targets: ts, Services: f.scope(), Reason: f.reason, Revision: res.Revision})
}

// holdingOut returns the keys of every override that holds the backends
// of targets (within scope) out of traffic, however the override named
// them: a drain on a host's address also holds the backend registered
// under its instance name, and the other way round. An override that also
// covers services outside scope cannot be cleared without touching them: it
// is named in the error and nothing is cleared.
func (f *fleet) holdingOut(targets, scope []string) ([]string, error) {
	type backend struct {
		service string
		in      registry.Instance
	}
	var del []string
	seen := map[string]bool{}
	for _, t := range targets {
		var held []backend
		for _, svc := range sortedKeys(f.backends) {
			if len(scope) > 0 && !slices.Contains(scope, svc) {
				continue
			}
			for _, in := range f.backends[svc] {
				if in.Host == t || in.Name == t {
					held = append(held, backend{svc, in})
				}
			}
		}
		found := false
		for _, o := range f.overrides.Overrides {
			if !holdsOut(o) {
				continue
			}
			hits := o.Target == t // an override on a host with no backend left
			for _, b := range held {
				hits = hits || o.Matches(b.service, b.in)
			}
			if !hits {
				continue
			}
			found = true
			if len(scope) > 0 && !subset(o.Services, scope) {
				return nil, fmt.Errorf("%s is held out by override %s (%s by %s, reason %q) on %s, wider than --service %s: run add-to-lb with a --service covering them, or without --service; nothing written",
					t, o.Key(), describe(o), o.By, o.Reason, servicesOf(o), strings.Join(scope, ","))
			}
			if !seen[o.Key()] {
				seen[o.Key()] = true
				del = append(del, o.Key())
			}
		}
		if !found && len(held) == 0 {
			return nil, fmt.Errorf("unknown host %q: no backend of %s and no override has that host or name; nothing written", t, scopeName(scope, f))
		}
	}
	return del, nil
}

// holdsOut reports whether an override takes backends out of traffic: a
// drain, a maint, or a weight of 0.
func holdsOut(o registry.Override) bool {
	if o.State == registry.StateConfirm {
		return false // a confirmation of removals, not a removal
	}
	return o.State != registry.StateReady || (o.Weight != nil && *o.Weight == 0)
}

func describe(o registry.Override) string {
	if o.State == registry.StateReady && o.Weight != nil {
		return fmt.Sprintf("weight %d", *o.Weight)
	}
	return string(o.State)
}

func servicesOf(o registry.Override) string {
	if len(o.Services) == 0 {
		return "every service"
	}
	return "services " + strings.Join(o.Services, ",")
}

// subset reports whether every element of a is in b (an empty a is "all
// services", a subset of no scope).
func subset(a, b []string) bool {
	if len(a) == 0 {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no override"
	}
	return strings.Join(s, ", ")
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

func runWeight(ctx context.Context, env Env, args []string) error {
	var f changeFlags
	fs := newFlagSet(env, "weight", "weight HOST[,HOST...] N|reset [flags]")
	f.register(fs, false)
	f.registerSafety(fs)
	for _, a := range args {
		if _, err := strconv.Atoi(a); err == nil && strings.HasPrefix(a, "-") {
			return usagef("weight %s: want 0..%d or reset", a, registry.MaxWeight)
		}
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want HOST[,HOST...] and a weight (0..%d, or reset)", registry.MaxWeight)
	}
	ts, err := targets(pos[0])
	if err != nil {
		return err
	}
	var weight *int
	if pos[1] != "reset" {
		n, err := strconv.Atoi(pos[1])
		if err != nil || n < 0 || n > registry.MaxWeight {
			return usagef("weight %q: want 0..%d or reset", pos[1], registry.MaxWeight)
		}
		weight = &n
	}
	if f.local {
		return usagef("--local does not set weights")
	}
	if err := f.checkLimits(); err != nil {
		return err
	}
	b, fl, now, err := f.open(ctx, env)
	if err != nil {
		return err
	}
	defer b.Close()
	var adds []registry.Override
	var del []string
	for _, t := range ts {
		if len(fl.matching(t, f.scope())) == 0 {
			return fmt.Errorf("unknown host %q: no backend of %s has that host or name; nothing written", t, scopeName(f.scope(), fl))
		}
		if weight == nil {
			del = append(del, registry.OverrideKey(t, f.scope(), true))
			continue
		}
		adds = append(adds, registry.Override{Target: t, State: registry.StateReady, Weight: weight, Services: f.scope(), Reason: f.reason, By: env.By, At: now.UTC()})
	}
	after := replaceKeys(fl.overrides.Overrides, adds, del)
	action := "weight"
	if weight == nil {
		action = "weight-reset"
	}
	res := result{Action: action, Targets: ts, DryRun: f.dryRun, Plan: fl.plan(fl.overrides.Overrides, after, nil, now), Deleted: del, Dead: fl.dead(), Unknown: fl.unknown()}
	// A weight of 0 takes servers out of traffic: the same limits as a drain.
	if err := refuse(env, &f, res, action+" "+strings.Join(ts, ","), weight != nil && *weight == 0); err != nil {
		return err
	}
	if f.dryRun {
		reportDryRun(env, &f, res, fmt.Sprintf("%s %s would change", action, strings.Join(ts, ",")))
		return nil
	}
	for _, o := range adds {
		rev, err := b.PutOverride(ctx, o)
		if err != nil {
			return err
		}
		res.Written, res.Revision = append(res.Written, o.Key()), max(res.Revision, rev)
	}
	for _, k := range del {
		rev, err := b.DeleteOverride(ctx, k)
		if err != nil {
			return err
		}
		res.Revision = max(res.Revision, rev)
	}
	return finish(ctx, env, b, &f, res, registry.HistoryEntry{At: now.UTC(), By: env.By, Action: action, Targets: ts, Services: f.scope(), Weight: weight, Reason: f.reason, Revision: res.Revision})
}
