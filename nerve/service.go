package nerve

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/nerve/checks"
	"github.com/syncstack/syncstack/registry"
)

// CheckResult is the last result of one check.
type CheckResult struct {
	Check    string        `json:"check"`
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	At       time.Time     `json:"at"`
}

// Maintenance holds a service out of the registry whatever its health.
type Maintenance struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// ServiceStatus is what GET /status reports for one service.
type ServiceStatus struct {
	Name    string `json:"name"`
	State   string `json:"state"` // up, down, maintenance
	Healthy bool   `json:"healthy"`
	// Registered is what the registry has confirmed: true from the first
	// confirmed write until the removal is confirmed.
	Registered bool `json:"registered"`
	// Pending is the change nerve wants and the registry has not confirmed
	// yet (register, deregister, update), retried however long the
	// registry is away; PendingSince is when it became pending.
	Pending      string        `json:"pending,omitempty"`
	PendingSince *time.Time    `json:"pending_since,omitempty"`
	Key          string        `json:"key,omitempty"`
	Weight       *int          `json:"weight,omitempty"`
	Maintenance  *Maintenance  `json:"maintenance,omitempty"`
	Checks       []CheckResult `json:"checks"`
	GoodStreak   int           `json:"good_streak"`
	BadStreak    int           `json:"bad_streak"`
	LastError    string        `json:"registry_error,omitempty"`
}

// service runs one service's checks every interval, counts rise and fall
// over whole rounds, and keeps the registration in step: registered while
// healthy and not in maintenance.
type service struct {
	name    string
	cfg     *ServiceConfig
	checks  []checks.Check
	backend registry.Registrar
	log     *slog.Logger
	m       *Metrics
	done    chan struct{}
	ctx     context.Context // the check loop's
	cancel  context.CancelFunc

	mu        sync.Mutex
	healthy   bool
	good, bad int
	results   []CheckResult
	maint     *Maintenance
	weight    *int // set through the admin API; nil: the config's
	// What the registry holds, as far as it has confirmed: reg is the
	// registration (nil: none), registered the record confirmed written.
	// leaving: its removal was asked for and is not confirmed yet. What
	// nerve wants follows from healthy, maint and record(); the two are
	// reconciled until they agree.
	reg          registry.Registration
	registered   registry.Instance
	leaving      bool
	pending      string // pendingOp() as last noted
	pendingSince time.Time
	lastErr      string
	retries      *backoff.Backoff
	// confirmWait bounds one wait for the registry to confirm a removal
	// (the registry timeout): the keeper keeps trying in the background,
	// the wait is counted as a registry error and starts again.
	confirmWait time.Duration
	reporting   bool           // a reportLoop runs
	reporters   sync.WaitGroup // the reportLoops started
}

func newService(name string, cfg *ServiceConfig, backend registry.Registrar, log *slog.Logger, m *Metrics, confirmWait time.Duration) (*service, error) {
	s := &service{name: name, cfg: cfg, backend: backend, m: m, confirmWait: confirmWait,
		log: log.With("service", name), done: make(chan struct{}),
		// A write to a registry out of reach already waits its timeout:
		// the pause between attempts stays short, so a change lands soon
		// after the registry is back.
		retries: backoff.New(250*time.Millisecond, 2*time.Second)}
	for _, cc := range cfg.Checks {
		c, err := checks.New(cc)
		if err != nil {
			s.closeChecks()
			return nil, err
		}
		s.checks = append(s.checks, c)
	}
	s.results = make([]CheckResult, len(s.checks))
	for i, c := range s.checks {
		s.results[i].Check = c.Name()
	}
	m.Up.WithLabelValues(name).Set(0)
	m.Registered.WithLabelValues(name).Set(0)
	m.Maintenance.WithLabelValues(name).Set(0)
	return s, nil
}

// start runs a check round at once and then every check_interval (at the
// service's own slot: firstSlot), until ctx ends or stop; done closes once
// the last round and reporter ended.
//
// The rounds run on a timer, not on a goroutine per service: a round is a
// short-lived goroutine (time.AfterFunc's), so between rounds a service
// holds no stack. A goroutine per service parked on a ticker kept a stack
// each (100 services: ~1 MB of nerve's RSS, most of it grown by the
// checks' dials and never shrunk between rounds that grow it again).
func (s *service) start(ctx context.Context) {
	ctx, s.cancel = context.WithCancel(ctx)
	s.ctx = ctx
	// ended: no round runs or is due any more; done closes once the
	// reporters are through too.
	var end sync.Once
	ended := func() {
		end.Do(func() {
			go func() {
				// A poke that saw ctx alive under s.mu has added its
				// reporter once s.mu is free; one after sees ctx ended
				// and adds none: Wait cannot miss a reporter.
				s.mu.Lock()
				s.mu.Unlock()
				s.reporters.Wait()
				close(s.done)
			}()
		})
	}
	interval := s.cfg.CheckInterval.D()
	// mu orders the rounds' use of t and due: each round runs on a
	// goroutine of its own.
	var mu sync.Mutex
	due := firstSlot(s.name, time.Now(), interval)
	var t *time.Timer
	round := func() {
		if ctx.Err() == nil {
			s.round(ctx)
			s.poke()
		}
		mu.Lock()
		defer mu.Unlock()
		if ctx.Err() != nil {
			ended()
			return
		}
		// The next slot; a round that overran skips the slots it missed.
		now := time.Now()
		for due.Before(now) {
			due = due.Add(interval)
		}
		t.Reset(due.Sub(now))
		due = due.Add(interval)
	}
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(0, round) // it reads t under mu, after this
	// A round is due (the timer pending, no round running): stopping the
	// timer ends the rounds. Otherwise the running round sees ctx ended.
	context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if t.Stop() {
			ended()
		}
	})
}

// checkSlots is how many instants of the interval a host's services'
// rounds are spread over (by service name): 100 services started together
// otherwise checked together every interval, a burst of 100 dials and
// 100 goroutines' stacks at once. Not one instant per service: a round is
// a few wake-ups of the process, and 100 rounds at 100 instants took nerve
// from 0.7 to 2.5 % of a core (quick benchmark runs); 4 instants cost
// 0.1 % and keep most of the memory saved (RSS 23.5–24.4 → 22.3–22.8 MB).
const checkSlots = 4

// firstSlot is when a service's second round runs, its first having run
// at start: from then on every interval. The second round comes between
// half an interval and one and a half after the first, one interval on
// average, so registering (rise rounds) takes as long as before.
func firstSlot(service string, start time.Time, interval time.Duration) time.Time {
	h := fnv.New64a()
	h.Write([]byte(service))
	slot := start.Add(interval / checkSlots * time.Duration(h.Sum64()%checkSlots))
	for slot.Sub(start) < interval/2 {
		slot = slot.Add(interval)
	}
	return slot
}

// poke makes sure a reporter runs when the registration is out of step.
// In the steady state none runs: a service costs no goroutine.
func (s *service) poke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notePending()
	if s.reporting || s.ctx.Err() != nil || !s.outOfStep() {
		return
	}
	s.reporting = true
	s.reporters.Add(1)
	go func() {
		defer s.reporters.Done()
		s.reportLoop(s.ctx)
	}()
}

// outOfStep reports whether the registration differs from what it should
// be; s.mu is held.
func (s *service) outOfStep() bool { return s.pendingOp() != "" }

// pendingOp is the change the registry has still to confirm: deregister,
// register, update, or "" when it holds what nerve wants. An unconfirmed
// removal comes first whatever nerve wants now: registering again before
// it is confirmed would leave two records for the instance. s.mu is held.
func (s *service) pendingOp() string {
	want := s.healthy && s.maint == nil
	switch {
	case s.reg != nil && (s.leaving || !want):
		return "deregister"
	case want && s.reg == nil:
		return "register"
	case want && !s.record().Equal(s.registered):
		return "update"
	}
	return ""
}

// notePending records when the pending change began, for the status and
// the metric; s.mu is held.
func (s *service) notePending() {
	op := s.pendingOp()
	if op == s.pending {
		return
	}
	if s.pending != "" {
		s.m.Pending.WithLabelValues(s.name, s.pending).Set(0)
	}
	s.pending, s.pendingSince = op, time.Time{}
	if op != "" {
		s.pendingSince = time.Now().UTC()
		s.m.Pending.WithLabelValues(s.name, op).Set(1)
	}
}

// reportLoop writes until the registration is in step, retrying failed
// writes with backoff, then ends.
func (s *service) reportLoop(ctx context.Context) {
	for {
		retry := s.reconcile(ctx)
		s.mu.Lock()
		if ctx.Err() != nil || (retry == 0 && !s.outOfStep()) {
			s.reporting = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if retry > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
		}
	}
}

// round runs every check at once and folds the result into the streaks.
func (s *service) round(ctx context.Context) {
	results := make([]CheckResult, len(s.checks))
	probe := func(i int) {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.Checks[i].Timeout.D())
		defer cancel()
		start := time.Now()
		err := s.checks[i].Check(cctx)
		r := CheckResult{Check: s.checks[i].Name(), OK: err == nil, Duration: time.Since(start), At: start}
		if err != nil {
			r.Error = err.Error()
		}
		results[i] = r
	}
	if len(s.checks) == 1 {
		probe(0) // the common case: no goroutine per round
	} else {
		var wg sync.WaitGroup
		for i := range s.checks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				probe(i)
			}()
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return // shutting down: a cancelled check says nothing about health
	}
	ok := true
	for _, r := range results {
		ok = ok && r.OK
		res := "ok"
		if !r.OK {
			res = "fail"
		}
		s.m.CheckResults.WithLabelValues(s.name, r.Check, res).Inc()
		s.m.CheckDuration.WithLabelValues(s.name, r.Check).Observe(r.Duration.Seconds())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = results
	if ok {
		s.good, s.bad = s.good+1, 0
		if !s.healthy && s.good >= s.cfg.Rise {
			s.healthy = true
			s.m.Transitions.WithLabelValues(s.name, "up").Inc()
			s.log.Info("service is up", "rise", s.cfg.Rise)
		}
	} else {
		s.good, s.bad = 0, s.bad+1
		if s.healthy && s.bad >= s.cfg.Fall {
			s.healthy = false
			s.m.Transitions.WithLabelValues(s.name, "down").Inc()
			s.log.Warn("service is down", "fall", s.cfg.Fall, "checks", failing(results))
		}
	}
	s.m.Up.WithLabelValues(s.name).Set(b2f(s.healthy))
}

func failing(rs []CheckResult) []string {
	var out []string
	for _, r := range rs {
		if !r.OK {
			out = append(out, r.Check+": "+r.Error)
		}
	}
	return out
}

// record is the instance to register now: the config's, with the weight
// set through the admin API.
func (s *service) record() registry.Instance {
	in := s.cfg.Instance()
	if s.weight != nil {
		w := *s.weight
		in.Weight = &w
	}
	return in
}

// reconcile takes one step towards what nerve wants, and returns when to
// try again (0: at once if anything is still pending). A registry error is
// "unknown": nothing changes, the write is retried with backoff, and it
// never counts against health.
func (s *service) reconcile(ctx context.Context) time.Duration {
	s.mu.Lock()
	op := s.pendingOp()
	reg, rec := s.reg, s.record()
	if op == "deregister" {
		s.leaving = true
	}
	s.mu.Unlock()

	var err error
	switch op {
	case "deregister":
		// The keeper retries the removal until the registry confirms it;
		// this only waits for that, a bounded time per pass.
		dctx, cancel := context.WithTimeout(ctx, s.confirmWait)
		err = reg.Deregister(dctx)
		cancel()
		if errors.Is(err, registry.ErrClosed) {
			// The client closed: its session or lease ends, and the
			// record with it.
			err = nil
		}
		if err == nil {
			s.mu.Lock()
			s.reg, s.leaving = nil, false
			s.mu.Unlock()
			s.log.Info("deregistered", "key", reg.Key())
		}
	case "register":
		var r registry.Registration
		r, err = s.backend.Register(ctx, s.cfg.RegistryPath(), rec)
		if err == nil {
			s.mu.Lock()
			s.reg, s.registered = r, rec
			s.mu.Unlock()
			s.log.Info("registered", "key", r.Key())
		}
	case "update":
		err = reg.Update(ctx, rec)
		if err == nil {
			s.mu.Lock()
			s.registered = rec
			s.mu.Unlock()
			s.log.Info("registration updated", "key", reg.Key())
		}
	default:
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.Registered.WithLabelValues(s.name).Set(b2f(s.reg != nil))
	s.notePending()
	if err != nil && ctx.Err() == nil {
		s.m.RegistryErrors.WithLabelValues(s.name, op).Inc()
		s.lastErr = op + ": " + err.Error()
		if op == "deregister" {
			// Deregister itself waited; the keeper paces the retries.
			s.log.Warn("registry has not confirmed the removal yet; still trying", "err", err, "pending_since", s.pendingSince)
			return 100 * time.Millisecond
		}
		d := s.retries.Next()
		s.log.Warn("registry write failed; will retry", "op", op, "err", err, "in", d)
		return d
	}
	if err == nil {
		s.lastErr = ""
		s.retries.Reset()
	}
	return 0
}

func (s *service) registeredRecord() registry.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registered
}

// stop ends the check loop and deregisters. A registration whose removal
// the registry has not confirmed by ctx's end is returned with the error:
// its keeper keeps trying, and a service that replaces this one waits for
// it before it registers.
func (s *service) stop(ctx context.Context) (registry.Registration, error) {
	s.cancel()
	<-s.done
	s.closeChecks()
	s.mu.Lock()
	reg := s.reg
	s.mu.Unlock()
	s.m.forget(s.name)
	if reg == nil {
		return nil, nil
	}
	err := reg.Deregister(ctx)
	if errors.Is(err, registry.ErrClosed) {
		err = nil
	}
	s.log.Info("deregistered", "key", reg.Key(), "err", err)
	if err != nil {
		return reg, err
	}
	return nil, nil
}

func (s *service) status() ServiceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notePending()
	st := ServiceStatus{
		Name: s.name, Healthy: s.healthy, Registered: s.reg != nil, Pending: s.pending,
		Checks: append([]CheckResult(nil), s.results...), GoodStreak: s.good, BadStreak: s.bad,
		LastError: s.lastErr, Weight: s.record().Weight,
	}
	if s.pending != "" {
		since := s.pendingSince
		st.PendingSince = &since
	}
	if s.reg != nil {
		st.Key = s.reg.Key()
	}
	switch {
	case s.maint != nil:
		m := *s.maint
		st.State, st.Maintenance = "maintenance", &m
	case s.healthy:
		st.State = "up"
	default:
		st.State = "down"
	}
	return st
}

func (s *service) setMaintenance(m *Maintenance) {
	s.mu.Lock()
	s.maint = m
	s.mu.Unlock()
	s.m.Maintenance.WithLabelValues(s.name).Set(b2f(m != nil))
	s.poke()
}

func (s *service) setWeight(w *int) {
	s.mu.Lock()
	s.weight = w
	s.mu.Unlock()
	s.poke()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// closeChecks stops what checks hold (a plugin's process).
func (s *service) closeChecks() {
	for _, c := range s.checks {
		if cl, ok := c.(io.Closer); ok {
			cl.Close()
		}
	}
}
