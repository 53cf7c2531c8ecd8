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
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// validatePrefix checks a key prefix the way ZooKeeper paths are checked, so
// configs move between the backends unchanged.
func validatePrefix(p string) error {
	if !strings.HasPrefix(p, "/") || (len(p) > 1 && strings.HasSuffix(p, "/")) {
		return fmt.Errorf("%q must start with / and not end with /", p)
	}
	for _, el := range strings.Split(p[1:], "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%q has an empty, . or .. element", p)
		}
	}
	if err := registry.ValidateText(p, 1024); err != nil {
		return fmt.Errorf("%q: %w", p, err)
	}
	return nil
}

// Client is one etcd client shared by every registration, watch and
// override call of a process. It implements registry.Backend.
type Client struct {
	cfg Config
	log *slog.Logger
	m   *registry.Metrics

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	lease     clientv3.LeaseID // 0 while none is granted
	leaseOn   bool             // the lease loop runs
	changed   chan struct{}    // closed and replaced when the lease changes
	acks      map[string]*leasedKey
	closed    bool
	closeOnce sync.Once
	connErr   error // why the background connection has not succeeded yet

	cli       *clientv3.Client // set once connected is closed
	connected chan struct{}
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
		acks:      map[string]*leasedKey{},
		connected: make(chan struct{}),
	}
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
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	}
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
	backoff := 100 * time.Millisecond
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
		select {
		case <-c.ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
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

// keepLease grants a lease and keeps it alive. When the keep-alive stream
// gives up (etcd out of reach longer than the TTL), the same lease is tried
// again first: etcd does not expire leases while it has no leader, and
// extends them all by a TTL when it comes back, so after an outage of the
// whole cluster the lease is usually still there and the keys never
// vanish. Only a lease that etcd says is gone is replaced by a new one
// (and every key put again under it).
func (c *Client) keepLease() {
	backoff := 100 * time.Millisecond
	wait := func() {
		select {
		case <-c.ctx.Done():
		case <-time.After(backoff):
		}
		// A sidecar must be back within a second of the cluster.
		backoff = min(2*backoff, time.Second)
	}
	ttl := int64((c.cfg.LeaseTTL + time.Second - 1) / time.Second)
	cli, err := c.conn(c.ctx)
	if err != nil {
		return // closed before it ever connected
	}
	var id clientv3.LeaseID // the lease to keep; 0: grant one
	for c.ctx.Err() == nil {
		if id == 0 {
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.OpTimeout)
			grant, err := cli.Grant(ctx, ttl)
			cancel()
			c.count("writes", "grant", err)
			if err != nil {
				c.log.Debug("lease grant failed; retrying", "err", err, "in", backoff)
				wait()
				continue
			}
			id = grant.ID
		}
		alive, err := cli.KeepAlive(c.ctx, id)
		if err != nil {
			wait()
			continue
		}
		// The first answer says whether the lease still exists.
		first, ok := <-alive
		if c.ctx.Err() != nil {
			return
		}
		if !ok || first == nil || first.TTL <= 0 {
			if c.leaseGone(id) {
				c.m.SessionLosses.WithLabelValues(backendName).Inc()
				c.log.Warn("lease lost; granting a new one and re-registering", "lease", fmt.Sprintf("%x", int64(id)))
				c.setLease(0)
				id = 0
			}
			wait()
			continue
		}
		backoff = 100 * time.Millisecond
		if cur, _ := c.leaseNow(); cur != id {
			c.setLease(id)
		} else {
			c.log.Info("lease kept alive again after an interruption", "lease", fmt.Sprintf("%x", int64(id)))
		}
		for range alive {
		}
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("lease keep-alive interrupted; resuming the same lease", "lease", fmt.Sprintf("%x", int64(id)))
	}
}

// leaseGone asks etcd whether lease id has expired or was revoked; an
// unreachable etcd says nothing (false).
func (c *Client) leaseGone(id clientv3.LeaseID) bool {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.OpTimeout)
	defer cancel()
	cli, err := c.conn(ctx)
	if err != nil {
		return false
	}
	resp, err := cli.TimeToLive(ctx, id)
	c.count("reads", "lease", err)
	if err != nil {
		return errors.Is(err, rpctypes.ErrLeaseNotFound)
	}
	return resp.TTL <= 0
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
