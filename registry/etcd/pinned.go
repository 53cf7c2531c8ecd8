package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/syncstack/syncstack/internal/backoff"
)

// A member can stall without closing its connections: SIGSTOP, a disk that
// stops answering fsync, a hung VM. gRPC's own keepalive does not notice in
// time: grpc-go raises any client ping interval below 10 s to 10 s, and
// etcd refuses pings more often than every 5 s anyway, so a stream on a
// stalled member stays "healthy" for 13 s — longer than a lease TTL. And the
// client's balancer cannot be told which member to avoid.
//
// So the long-lived traffic of a Client — lease keep-alives and every watch
// — goes over a second connection, a pin, to ONE configured endpoint. Two
// detectors watch the pin: the lease keeper (a grant, stream open or
// keep-alive that does not answer within a fraction of the TTL, or that
// fails because the member cannot be reached or has no leader) and the
// progress monitor (a watch progress request that gets no answer within
// progressTimeout). Either abandons the pin: its connection is closed,
// which fails every call and watch still waiting on the stalled member at
// once, and the next pin goes to the next endpoint, skipping endpoints that
// stalled recently. Watches resume from their last revision on the new pin;
// the lease is renewed there.
//
// A killed member needs the same: its connection fails at once, but gRPC
// then reconnects to that one endpoint for ever (connection refused), and a
// pin that is not left keeps the lease on it until the lease expires.
//
// With a single configured endpoint (a load-balancer name) a new pin is a
// new connection to it.

var (
	// defaultProbeInterval is how often the monitor asks the pinned member
	// for watch progress (Config.ProbeInterval), and progressTimeout how
	// long it waits for the answer before it declares the member stalled.
	// A change made while the pinned member is stalled reaches watchers
	// within about their sum plus a reconnect: about 1 s by default. (Each
	// check is one small request per Client, answered from the member's
	// memory.)
	defaultProbeInterval = 300 * time.Millisecond
	progressTimeout      = 700 * time.Millisecond
	// readProbeEvery is the period of the read that replaces the progress
	// request behind an endpoint that answers none (etcd's grpc-proxy): the
	// proxy forwards each read to the cluster, so at fleet scale a 300 ms
	// period costs the cluster ~3 reads/s per host (SCALING.md); a frozen
	// proxy is still left within about 2 s.
	readProbeEvery = 1500 * time.Millisecond
	// quarantine is how long an endpoint that stalled is passed over when
	// another one is available.
	quarantine = 30 * time.Second
)

// pin is one connection to one endpoint.
type pin struct {
	cli      *clientv3.Client
	endpoint string
	// ctx ends when the pin is abandoned: calls on the pin that may wait
	// (a list, say) use it, so that they end with it rather than wait out
	// their own time on a member that is gone.
	ctx   context.Context
	leave context.CancelFunc

	streamMu sync.Mutex
	stream   *watchStream // the watches' stream (Client.watches)

	// progress is whether a progress notification on the watches' stream
	// can be taken as their revision (progressUnknown until the member's
	// version is read; see watchProgressSafe).
	progress atomic.Int32
}

const (
	progressUnknown int32 = iota
	progressSafe
	progressUnsafe
)

// pinned returns the pin in force, connecting one when there is none.
func (c *Client) pinned(ctx context.Context) (*pin, error) {
	if _, err := c.conn(ctx); err != nil { // connected (and logged in) once
		return nil, err
	}
	c.pinMu.Lock()
	defer c.pinMu.Unlock()
	if c.pin != nil {
		return c.pin, nil
	}
	if c.ctx.Err() != nil {
		return nil, context.Cause(c.ctx)
	}
	ep := c.nextEndpoint()
	ccfg := c.ccfg
	ccfg.Endpoints = []string{ep}
	ccfg.Context = c.ctx
	// New blocks only to log in (with a username), within DialTimeout:
	// a stalled member must not hold every caller of pinned for long.
	ccfg.DialTimeout = min(ccfg.DialTimeout, max(c.cfg.LeaseTTL/3, time.Second))
	cli, err := clientv3.New(ccfg)
	if err != nil {
		c.stalled[ep] = time.Now()
		return nil, fmt.Errorf("etcd: connect %s: %w", ep, err)
	}
	pctx, leave := context.WithCancel(c.ctx)
	c.pin = &pin{cli: cli, endpoint: ep, ctx: pctx, leave: leave}
	c.log.Debug("pinned long-lived calls to an endpoint", "endpoint", ep)
	return c.pin, nil
}

// nextEndpoint picks the endpoint for a new pin: the next in order that has
// not stalled within quarantine, else the one that stalled longest ago.
// c.pinMu is held.
func (c *Client) nextEndpoint() string {
	eps := c.cfg.Endpoints
	if c.pinNext < 0 {
		// Start anywhere, so that a fleet spreads over the members.
		c.pinNext = rand.IntN(len(eps))
	}
	best := ""
	for i := range eps {
		ep := eps[(c.pinNext+i)%len(eps)]
		at, bad := c.stalled[ep]
		if !bad || time.Since(at) > quarantine {
			best = ep
			c.pinNext = (c.pinNext + i + 1) % len(eps)
			break
		}
		if best == "" || at.Before(c.stalled[best]) {
			best = ep
		}
	}
	if best == "" {
		best = eps[c.pinNext%len(eps)]
	}
	return best
}

// abandon leaves p (when it is still the pin in force) because its member
// stalled: every call and watch on it fails now, and the next pin goes to
// another endpoint.
func (c *Client) abandon(p *pin, why string) {
	c.pinMu.Lock()
	if c.pin != p {
		c.pinMu.Unlock()
		return
	}
	c.pin = nil
	// Said once per endpoint and quarantine: while the whole cluster is
	// down every endpoint is left again on every attempt.
	at, known := c.stalled[p.endpoint]
	again := known && time.Since(at) < quarantine
	c.stalled[p.endpoint] = time.Now()
	p.leave()
	c.pinMu.Unlock()
	c.m.Errors.WithLabelValues(backendName, "member_stalled").Inc()
	log := c.log.Warn
	if again {
		log = c.log.Debug
	}
	log("etcd member does not answer or cannot be reached; moving lease keep-alive and watches to another member",
		"endpoint", p.endpoint, "why", why)
	// Close may wait for the client's goroutines; nothing here needs to.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.cli.Close()
	}()
}

// closePin closes the pin at Close.
func (c *Client) closePin() {
	c.pinMu.Lock()
	p := c.pin
	c.pin = nil
	c.pinMu.Unlock()
	if p != nil {
		p.leave()
		p.cli.Close()
	}
}

// watchContext returns the context every watch on a pin uses: watches that
// share outgoing metadata share one gRPC stream (the monitor's probe has a
// stream of its own: probeContext). It starts the monitor.
func (c *Client) watchContext(ctx context.Context) context.Context {
	c.startMonitor()
	return metadata.NewOutgoingContext(ctx, requireLeader)
}

// requireLeader is clientv3.WithRequireLeader's metadata, made once: it is
// read, never written, and a watch per service made it anew (0.4 MB per
// 1000 watches). Unlike WithRequireLeader, watchContext replaces any
// outgoing metadata ctx has: none of its callers' contexts carry any.
var requireLeader = metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)

// startMonitor starts the monitor of the pin once. Watches start it before
// their first call on a pin: a list on a dead or frozen member would
// otherwise wait out OpTimeout, and be retried there, with nothing to
// notice that the member is gone.
func (c *Client) startMonitor() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.monitorOn && !c.closed {
		c.monitorOn = true
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.monitorPins()
		}()
	}
}

// monitorPins checks that the pinned member answers watch progress
// requests, and abandons the pin when it does not (or when it has no
// leader while the rest of the cluster may).
func (c *Client) monitorPins() {
	b := backoff.New(100*time.Millisecond, time.Second)
	for c.ctx.Err() == nil {
		p, err := c.pinned(c.ctx)
		if err != nil {
			if b.Wait(c.ctx) != nil {
				return
			}
			continue
		}
		start := time.Now()
		if why := c.probe(p); why != "" {
			c.abandon(p, why)
		} else if time.Since(start) > 10*c.cfg.ProbeInterval {
			b.Reset() // it ran a good while: not a fast failure loop
		}
		if b.Wait(c.ctx) != nil {
			return
		}
	}
}

// probeContext is the context of the monitor's probe: its own gRPC stream
// on the pin's connection (so it stalls with the member), apart from the
// watches'. etcd ≥ 3.5 does not answer a progress request while any watch
// on the stream starts ahead of the store's revision — and every watch
// here starts at the revision after its list, or after its own write — and
// ignores later requests until that one is answered: on the watches'
// stream, a quiet cluster's members looked like proxies (measured on etcd
// 3.6: every client fell back to read probes).
func (c *Client) probeContext() context.Context {
	return metadata.AppendToOutgoingContext(c.watchContext(c.ctx), "syncstack-stream", "probe")
}

// probe watches a key nobody writes on its own stream of p's connection
// and asks for progress every Config.ProbeInterval. It returns why the
// member is considered stalled, or "" when the pin went away for another
// reason.
func (c *Client) probe(p *pin) string {
	ctx, cancel := context.WithCancel(c.probeContext())
	defer cancel()
	// Watch returns only once the member confirms the watch: a stalled
	// member never does, so that wait is timed too.
	created := make(chan clientv3.WatchChan, 1)
	go func() { created <- p.cli.Watch(ctx, c.cfg.Root+"/.progress-probe") }()
	var wch clientv3.WatchChan
	tick := time.NewTicker(c.cfg.ProbeInterval)
	defer tick.Stop()
	waiting := time.After(progressTimeout) // set while an answer is due
	unary := false                         // the endpoint answers no progress requests: probe with reads
	var lastRead time.Time                 // of the last read probe
	// answered: a progress request was answered on this pin, so the
	// endpoint is a member that answers them, and a later silence is a
	// stall, whatever reads say (a member restarting answers reads while
	// its streams are gone: keeping the pin then let leases expire).
	answered := false
	ticks := 0 // progress requests sent on the probe's stream
	for {
		select {
		case <-c.ctx.Done():
			return ""
		case <-p.ctx.Done():
			return ""
		case wch = <-created:
			waiting = nil
		case resp, ok := <-wch:
			if !ok {
				return "" // the pin was closed
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrNoLeader) {
					return "member has no leader"
				}
				return ""
			}
			if waiting != nil && wch != nil {
				answered = true
			}
			waiting = nil // any answer on the stream shows it moves
		case <-tick.C:
			if waiting != nil {
				continue
			}
			if unary {
				if time.Since(lastRead) < max(readProbeEvery, c.cfg.ProbeInterval) {
					continue
				}
				lastRead = time.Now()
				if err := c.ping(p); err != nil && c.ctx.Err() == nil && p.ctx.Err() == nil {
					return fmt.Sprintf("no answer to a read within %v: %v", progressTimeout, err)
				}
				continue
			}
			rctx, rcancel := context.WithTimeout(ctx, progressTimeout)
			err := p.cli.RequestProgress(rctx)
			rcancel()
			c.m.ProgressRequests.WithLabelValues(backendName).Inc()
			if ticks++; ticks%watchProgressEvery == 0 {
				c.requestWatchProgress(p)
			}
			if err != nil && c.ctx.Err() == nil {
				return fmt.Sprintf("progress request: %v", err)
			}
			waiting = time.After(progressTimeout)
		case <-waiting:
			if wch == nil {
				return fmt.Sprintf("watch not confirmed within %v", progressTimeout)
			}
			if answered {
				return fmt.Sprintf("no watch progress within %v", progressTimeout)
			}
			// etcd's grpc-proxy (the watch fan-out tier of large fleets)
			// confirms watches but never answers a progress request. An
			// endpoint that never answered one but answers a read (a
			// linearizable one: a member without a leader does not) is
			// not stalled: probe it with reads from now on (one per
			// readProbeEvery, which the proxy forwards to the cluster:
			// SCALING.md).
			if err := c.ping(p); err != nil {
				return fmt.Sprintf("no watch progress within %v, nor an answer to a read: %v", progressTimeout, err)
			}
			if !unary {
				c.log.Debug("endpoint does not answer watch progress requests (a grpc-proxy?); probing it with reads", "endpoint", p.endpoint)
			}
			unary, waiting, lastRead = true, nil, time.Now()
		}
	}
}

// watchProgressEvery: one probe in that many also asks for progress on
// the watches' stream.
const watchProgressEvery = 10

// requestWatchProgress asks for progress on the watches' stream, not for
// liveness (the probe's stream is for that; the answer is not awaited) but
// so that a quiet watch's revision keeps up with the store: after a move to
// another member it resumes from there, not from its list's revision, which
// compaction may have removed (a relist per quiet service). etcd answers it
// once every watch on the stream has caught up — from 3.4.24 and 3.5.8 on
// (etcd-io/etcd#15220). Before, it answered at once with the store's
// revision, ahead of the events a watch still had to receive; a watch that
// took it and then moved would resume past them and never see them. On
// such a member no progress is asked for: a quiet watch may relist after a
// move instead.
func (c *Client) requestWatchProgress(p *pin) {
	p.streamMu.Lock()
	s := p.stream
	p.streamMu.Unlock()
	if s == nil || !c.watchProgressSafe(p) {
		return
	}
	s.requestProgress()
	c.m.ProgressRequests.WithLabelValues(backendName).Inc()
}

// watchProgressSafe reports whether p's member answers progress requests
// only for watches that caught up, reading its version once per pin.
func (c *Client) watchProgressSafe(p *pin) bool {
	switch p.progress.Load() {
	case progressSafe:
		return true
	case progressUnsafe:
		return false
	}
	ctx, cancel := context.WithTimeout(p.ctx, progressTimeout)
	defer cancel()
	st, err := p.cli.Status(ctx, p.endpoint)
	if err != nil {
		return false // asked again at the next request
	}
	if !progressWaitsForWatches(st.Version) {
		p.progress.Store(progressUnsafe)
		c.log.Info("etcd member answers watch progress requests before its watches catch up (etcd < 3.4.24, or 3.5 < 3.5.8: etcd-io/etcd#15220); not asking it for progress: a quiet watch lists again after a move instead",
			"endpoint", p.endpoint, "version", st.Version)
		return false
	}
	p.progress.Store(progressSafe)
	return true
}

// progressWaitsForWatches reports whether an etcd server of that version
// answers a progress request only once every watch on the stream has
// caught up: 3.4.24 and later 3.4, 3.5.8 and later, 3.6 and later. An
// unparsable version is taken for an old one.
func progressWaitsForWatches(version string) bool {
	parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3)
	if len(parts) < 3 {
		return false
	}
	var n [3]int
	for i, part := range parts {
		if j := strings.IndexFunc(part, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			part = part[:j] // "0-rc.1"
		}
		v, err := strconv.Atoi(part)
		if err != nil {
			return false
		}
		n[i] = v
	}
	switch major, minor, patch := n[0], n[1], n[2]; {
	case major != 3:
		return major > 3
	case minor == 4:
		return patch >= 24
	case minor == 5:
		return patch >= 8
	default:
		return minor > 5
	}
}

// ping is the probe of an endpoint that answers no watch progress requests:
// a linearizable count-only read of the probe key, within progressTimeout.
// Counted as op "probe", apart from the reads that follow changes.
func (c *Client) ping(p *pin) error {
	ctx, cancel := context.WithTimeout(p.ctx, progressTimeout)
	defer cancel()
	_, err := p.cli.Get(ctx, c.cfg.Root+"/.progress-probe", clientv3.WithCountOnly())
	c.count("reads", "probe", err)
	return err
}
