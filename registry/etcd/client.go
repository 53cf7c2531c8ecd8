// Package etcd is the etcd backend of the registry: registrations bound to a
// lease that is kept alive (and re-granted at once when lost), prefix watches
// that resume from a revision and recover from compaction, and the override
// and ack records of synctl and synapse.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

const backendName = "etcd"

// Config configures a Client.
type Config struct {
	// Endpoints are the cluster's client URLs (http://host:port) or host:port.
	Endpoints []string
	// LeaseTTL is how long a registration outlives a silent client.
	// Default 10s.
	LeaseTTL time.Duration
	// Root holds the fleet-wide records: Root/overrides/ and Root/acks/.
	// Default /syncstack.
	Root string
	// DialTimeout bounds connecting; default 5s.
	DialTimeout time.Duration
	// OpTimeout bounds one synchronous call; default 10s.
	OpTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to registry.DefaultMetrics().
	Metrics *registry.Metrics
	// TLS, when set, is used for every endpoint (https:// or host:port).
	TLS *tls.Config
	// Username and Password log in with etcd's authentication.
	Username, Password string
	// ProbeInterval is how often a client that watches asks its pinned
	// member for watch progress, to leave a stalled member (frozen, a
	// stuck disk) within about ProbeInterval + 0.7 s. Default 300ms; 100ms
	// to 30s. Each request costs the cluster ~0.33 ms of CPU (SCALING.md):
	// with thousands of hosts, a longer interval trades that bound for
	// load. (A client that only registers, nerve's, sends none: its lease
	// keep-alives are its probe.)
	ProbeInterval time.Duration
}

func (cfg *Config) finalize() error {
	if len(cfg.Endpoints) == 0 {
		return errors.New("etcd: endpoints: at least one is required")
	}
	for i, e := range cfg.Endpoints {
		if strings.Contains(e, "://") {
			if u, err := url.Parse(e); err != nil || u.Host == "" {
				return fmt.Errorf("etcd: endpoints[%d]: %q is not a URL", i, e)
			}
		} else if h, p, ok := strings.Cut(e, ":"); !ok || h == "" || p == "" {
			return fmt.Errorf("etcd: endpoints[%d]: %q is neither a URL nor host:port", i, e)
		}
		if cfg.TLS == nil && strings.HasPrefix(e, "https://") {
			// https with nothing else said: verify against the system roots.
			cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		}
	}
	for i, e := range cfg.Endpoints {
		if cfg.TLS != nil && strings.HasPrefix(e, "http://") {
			return fmt.Errorf("etcd: endpoints[%d]: %q is plain http while TLS is in use: use https://", i, e)
		}
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.LeaseTTL < time.Second {
		return fmt.Errorf("etcd: lease_ttl: %v is under the 1s minimum", cfg.LeaseTTL)
	}
	if cfg.Root == "" {
		cfg.Root = "/syncstack"
	}
	if err := validatePrefix(cfg.Root); err != nil {
		return fmt.Errorf("etcd: root: %w", err)
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = defaultProbeInterval
	}
	if err := CheckProbeInterval(cfg.ProbeInterval); err != nil {
		return fmt.Errorf("etcd: probe_interval: %w", err)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = registry.DefaultMetrics()
	}
	return nil
}

// CheckProbeInterval checks a Config.ProbeInterval (0 is the default).
func CheckProbeInterval(d time.Duration) error {
	if d != 0 && (d < 100*time.Millisecond || d > 30*time.Second) {
		return fmt.Errorf("%v is outside 100ms..30s", d)
	}
	return nil
}

// validatePrefix checks a key prefix the way ZooKeeper paths are checked, so
// configs move between the backends unchanged.
func validatePrefix(p string) error {
	if p == "/" {
		return fmt.Errorf("%q has an empty, . or .. element", p)
	}
	return registry.ValidatePath(p)
}

// Client is one etcd client shared by every registration, watch and
// override call of a process. It implements registry.Backend.
type Client struct {
	// Records are the fleet-wide records (overrides, acks, catalogs,
	// history) over the client's store: they implement those roles.
	registry.Records

	cfg Config
	log *slog.Logger
	m   *registry.Metrics

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	lease     clientv3.LeaseID // 0 while none is granted
	leaseOn   bool             // the lease loop runs
	leaseKick chan struct{}    // wakes the lease loop to renew now
	changed   chan struct{}    // closed and replaced when the lease changes
	acks      map[string]*leasedKey
	closed    bool
	closeOnce sync.Once
	connErr   error // why the background connection has not succeeded yet

	cli       *clientv3.Client // set once connected is closed
	connected chan struct{}
	ccfg      clientv3.Config // for pins
	monitorOn bool            // the pin monitor runs
	// progressSeen counts the progress notifications the watches
	// received (tests: a quiet watch's revision keeps up).
	progressSeen atomic.Int64

	pinMu   sync.Mutex
	pin     *pin                 // carries lease keep-alives and watches; nil: connect one
	pinNext int                  // index of the next endpoint to pin; -1: pick at random
	stalled map[string]time.Time // endpoints abandoned for stalling, and when
}

var _ registry.Backend = (*Client)(nil)

// New validates cfg and creates the client; it does not wait for the
// cluster, so a process can start while etcd is down. (With a username,
// etcd's client logs in as it connects: then the connection is made in the
// background, retried until it succeeds, and calls wait for it.)
func New(cfg Config) (*Client, error) {
	if err := cfg.finalize(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg: cfg, m: cfg.Metrics,
		log:       cfg.Logger.With("registry", backendName),
		changed:   make(chan struct{}),
		leaseKick: make(chan struct{}, 1),
		acks:      map[string]*leasedKey{},
		connected: make(chan struct{}),
		pinNext:   -1,
		stalled:   map[string]time.Time{},
	}
	c.Records = registry.Records{Store: store{c}, Root: cfg.Root}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	ccfg := clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		TLS:                  cfg.TLS,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: a sidecar
		// must be back within a second of the cluster.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	}
	c.ccfg = ccfg
	if cfg.Username == "" {
		cli, err := clientv3.New(ccfg) // does not wait for the cluster
		if err != nil {
			c.cancel()
			return nil, fmt.Errorf("etcd: client for %v: %w", cfg.Endpoints, err)
		}
		c.cli = cli
		close(c.connected)
		return c, nil
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.connectLoop(ccfg)
	}()
	return c, nil
}

// connectLoop creates the etcd client until it succeeds or c closes.
func (c *Client) connectLoop(ccfg clientv3.Config) {
	b := backoff.New(100*time.Millisecond, 2*time.Second)
	logged := ""
	for c.ctx.Err() == nil {
		cli, err := clientv3.New(ccfg)
		if err == nil {
			c.mu.Lock()
			c.cli, c.connErr = cli, nil
			c.mu.Unlock()
			close(c.connected)
			if logged != "" {
				c.log.Info("connected to etcd", "endpoints", c.cfg.Endpoints)
			}
			return
		}
		if c.cfg.TLS != nil {
			if p := tlsProblem(c.cfg.Endpoints[0], c.cfg.TLS, c.cfg.DialTimeout); p != nil {
				err = p
			}
		}
		err = fmt.Errorf("etcd: client for %v: %w", c.cfg.Endpoints, err)
		c.mu.Lock()
		c.connErr = err
		c.mu.Unlock()
		if err.Error() != logged {
			c.log.Warn("cannot connect to etcd yet; retrying", "err", err)
			logged = err.Error()
		}
		b.Wait(c.ctx)
	}
}

// conn returns the etcd client, waiting (within ctx) for the connection
// when it is made in the background.
func (c *Client) conn(ctx context.Context) (*clientv3.Client, error) {
	select {
	case <-c.connected:
		return c.cli, nil
	default:
	}
	select {
	case <-c.connected:
		return c.cli, nil
	case <-c.ctx.Done():
		return nil, registry.ErrClosed
	case <-ctx.Done():
		c.mu.Lock()
		err := c.connErr
		c.mu.Unlock()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("%w (%v)", err, ctx.Err())
	}
}

// explain adds what is known of a failed call's cause: why the client has
// not connected, or what the TLS handshake says (gRPC reports both as a
// deadline).
func (c *Client) explain(err error) error {
	if err == nil {
		return nil
	}
	if cerr := c.connectErr(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	if c.cfg.TLS != nil && (errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded) {
		if p := tlsProblem(c.cfg.Endpoints[0], c.cfg.TLS, time.Second); p != nil {
			return fmt.Errorf("%w (%v)", p, err)
		}
	}
	return err
}

// connectErr is why the client is not connected yet; nil once it is (or
// while the first attempt runs).
func (c *Client) connectErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connErr
}

// Close deletes this client's registrations and acks, revokes its lease and
// closes the connection.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel()
		c.wg.Wait()
		select {
		case <-c.connected:
		default:
			return // never connected: nothing to revoke or close
		}
		c.mu.Lock()
		lease := c.lease
		c.mu.Unlock()
		if lease != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c.cli.Revoke(ctx, lease)
			cancel()
		}
		c.closePin()
		c.cli.Close()
	})
	return nil
}

// currentLease returns the lease in force (0: none) and a channel closed when
// it changes. The first call starts the loop that keeps a lease.
func (c *Client) currentLease() (clientv3.LeaseID, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.leaseOn && !c.closed {
		c.leaseOn = true
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.keepLease()
		}()
	}
	return c.lease, c.changed
}

func (c *Client) setLease(id clientv3.LeaseID) {
	c.mu.Lock()
	c.lease = id
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// keepLease grants a lease and keeps it alive: one keep-alive every TTL/3
// on the pin's keep-alive stream, and an answer due within renewTimeout
// (TTL/6). A member that stalls is so noticed within half the TTL and
// left for another (see pinned.go), with time for more attempts before the
// lease could expire. (clientv3's own KeepAlive sends on one stream and
// waits for gRPC's keepalive to notice a stalled member: 13 s.) The stream
// lives as long as its member answers: a member shutting down gracefully
// keeps serving streams already open, as its lessor keeps counting.
//
// The lease is only replaced when etcd says it is gone (a keep-alive
// answered with TTL 0): then a new one is granted at once and every key
// put again under it. While etcd cannot be reached the same lease is tried
// again: etcd does not expire leases while it has no leader, and a new
// leader extends them all by a TTL, so after an outage of the whole
// cluster the lease is usually still there and the keys never vanish.
func (c *Client) keepLease() {
	ttl := int64((c.cfg.LeaseTTL + time.Second - 1) / time.Second)
	every, timeout := c.cfg.LeaseTTL/3, c.renewTimeout()
	b := backoff.New(50*time.Millisecond, time.Second)
	var id clientv3.LeaseID // the lease to keep; 0: grant one
	var ls *leaseStream
	defer func() {
		if ls != nil {
			ls.cancel()
		}
	}()
	var failingSince time.Time
	failed := func(p *pin, err error, what string) {
		if c.ctx.Err() != nil {
			return // closing: the calls failed for that
		}
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		c.log.Debug(what+" failed; retrying", "err", err, "endpoint", p.endpoint)
		if why, leave := leaveMember(err, timeout); leave {
			c.abandon(p, what+": "+why)
		}
		b.Wait(c.ctx)
	}
	for c.ctx.Err() == nil {
		p, err := c.pinned(c.ctx)
		if err != nil {
			c.log.Debug("no connection for the lease yet; retrying", "err", err)
			b.Wait(c.ctx)
			continue
		}
		if ls != nil && ls.p != p {
			ls.cancel()
			ls = nil
		}
		if ls == nil {
			// Opened before it is needed: a member shutting down refuses
			// new streams while its lessor still counts.
			if ls, err = c.openLeaseStream(p, timeout); err != nil {
				failed(p, err, "lease keep-alive stream")
				continue
			}
		}
		if id == 0 {
			// A grant is a raft proposal: allow it twice a renewal.
			ctx, cancel := context.WithTimeout(c.ctx, 2*timeout)
			grant, err := p.cli.Grant(ctx, ttl)
			cancel()
			c.count("writes", "grant", err)
			if err != nil {
				if c.ctx.Err() != nil {
					return
				}
				failed(p, err, "lease grant")
				continue
			}
			id = grant.ID
			c.setLease(id)
		} else {
			left, err := ls.renew(id, timeout)
			c.count("writes", "keepalive", err)
			switch {
			case c.ctx.Err() != nil:
				return
			case err == nil && left <= 0:
				// Gone for good: a new lease now, not after a backoff.
				c.m.SessionLosses.WithLabelValues(backendName).Inc()
				c.log.Warn("lease lost; granting a new one and re-registering", "lease", fmt.Sprintf("%x", int64(id)))
				c.setLease(0)
				id = 0
				continue
			case err != nil:
				ls.cancel()
				ls = nil
				failed(p, err, "lease keep-alive")
				continue
			}
		}
		if !failingSince.IsZero() {
			c.log.Info("lease kept alive again after an interruption", "lease", fmt.Sprintf("%x", int64(id)),
				"after", time.Since(failingSince).Round(time.Millisecond))
			failingSince = time.Time{}
		}
		b.Reset()
		t := time.NewTimer(every)
		select {
		case <-c.ctx.Done():
		case <-t.C:
		case <-c.leaseKick:
		}
		t.Stop()
	}
}

// errNoAnswer: a keep-alive got no answer within its time.
var errNoAnswer = errors.New("no answer")

// leaseStream is one LeaseKeepAlive stream on a pin, used one request at a
// time.
type leaseStream struct {
	p      *pin
	stream pb.Lease_LeaseKeepAliveClient
	resps  chan *pb.LeaseKeepAliveResponse
	errc   chan error // holds why the stream ended
	cancel context.CancelFunc
}

// openLeaseStream opens a keep-alive stream on p within timeout.
func (c *Client) openLeaseStream(p *pin, timeout time.Duration) (*leaseStream, error) {
	// Require a leader: a member cut off from the quorum ends the stream
	// (ErrNoLeader) instead of holding the keep-alives.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(c.ctx))
	// Opening waits while the connection is being made, and a frozen
	// member accepts TCP but never completes gRPC's handshake: without a
	// deadline here the keeper would wait out the whole connect timeout
	// (5 s) on it while the lease runs out.
	late := time.AfterFunc(timeout, cancel)
	s, err := pb.NewLeaseClient(p.cli.ActiveConnection()).LeaseKeepAlive(ctx)
	if !late.Stop() {
		cancel()
		return nil, errNoAnswer
	}
	if err != nil {
		cancel()
		return nil, err
	}
	ls := &leaseStream{p: p, stream: s, resps: make(chan *pb.LeaseKeepAliveResponse), errc: make(chan error, 1), cancel: cancel}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			r, err := s.Recv()
			if err != nil {
				ls.errc <- err
				return
			}
			select {
			case ls.resps <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ls, nil
}

// renew sends one keep-alive for id and returns the TTL left that the
// answer carries (0: the lease is gone), errNoAnswer after timeout, or why
// the stream ended.
func (ls *leaseStream) renew(id clientv3.LeaseID, timeout time.Duration) (int64, error) {
	if err := ls.stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
		return 0, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case r := <-ls.resps:
			if r.ID != int64(id) {
				continue // a late answer for a lease given up
			}
			return r.TTL, nil
		case err := <-ls.errc:
			ls.errc <- err
			return 0, err
		case <-t.C:
			return 0, errNoAnswer
		}
	}
}

// checkLease makes the lease loop renew at once: a put that etcd refused
// with "requested lease not found" calls it, so that the new lease (and
// every key under it) does not wait for the next renewal.
func (c *Client) checkLease() {
	select {
	case c.leaseKick <- struct{}{}:
	default:
	}
}

// renewTimeout bounds one keep-alive: TTL/6, so that a renewal sent every
// TTL/3 that hits a stalled member is retried elsewhere with most of the
// TTL left.
func (c *Client) renewTimeout() time.Duration {
	return max(c.cfg.LeaseTTL/6, 100*time.Millisecond)
}

// stalledCall tells a call that got no answer in time from one that was
// answered with an error.
func stalledCall(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}

// leaveMember tells whether a failed lease call (grant, stream open,
// keep-alive) means the pinned member cannot carry the lease now, and why:
// it did not answer within timeout (frozen), it cannot be reached or its
// stream broke (killed: connection refused or reset; etcd's "request timed
// out" and "leader changed" are Unavailable too), or it has no leader. Then
// the keeper moves to another member at once: staying would retry a dead
// member until the lease expired. Any other error is a working member's
// answer (a permission, a bad request) that another member would give too.
func leaveMember(err error, timeout time.Duration) (why string, leave bool) {
	switch {
	case err == nil:
		return "", false
	case errors.Is(err, errNoAnswer) || stalledCall(err):
		return fmt.Sprintf("no answer within %v", timeout), true
	case errors.Is(rpctypes.Error(err), rpctypes.ErrNoLeader):
		return "member has no leader", true
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		// Send on a stream the member broke (its Recv holds the status).
		return "stream broken", true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.Aborted:
		return fmt.Sprintf("unreachable: %v", err), true
	}
	return "", false
}

func (c *Client) leaseNow() (clientv3.LeaseID, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lease, c.changed
}

// opContext bounds a synchronous call by OpTimeout and by the client's life.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (c *Client) count(kind, op string, err error) {
	switch kind {
	case "reads":
		c.m.Reads.WithLabelValues(backendName, op).Inc()
	default:
		c.m.Writes.WithLabelValues(backendName, op).Inc()
	}
	if err != nil {
		c.m.Errors.WithLabelValues(backendName, op).Inc()
	}
}
