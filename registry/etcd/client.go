// Package etcd is the etcd backend of the registry: registrations bound to a
// lease that is kept alive (and re-granted at once when lost), prefix watches
// that resume from a revision and recover from compaction, and the override
// and ack records of synctl and synapse.
package etcd

import (
	"context"
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
	cli *clientv3.Client
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
}

var _ registry.Backend = (*Client)(nil)

// New validates cfg and creates the client; it does not wait for the
// cluster, so a process can start while etcd is down.
func New(cfg Config) (*Client, error) {
	if err := cfg.finalize(); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: a sidecar
		// must be back within a second of the cluster.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: client for %v: %w", cfg.Endpoints, err)
	}
	c := &Client{
		cfg: cfg, cli: cli, m: cfg.Metrics,
		log:     cfg.Logger.With("registry", backendName),
		changed: make(chan struct{}),
		acks:    map[string]*leasedKey{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
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
	var id clientv3.LeaseID // the lease to keep; 0: grant one
	for c.ctx.Err() == nil {
		if id == 0 {
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.OpTimeout)
			grant, err := c.cli.Grant(ctx, ttl)
			cancel()
			c.count("writes", "grant", err)
			if err != nil {
				c.log.Debug("lease grant failed; retrying", "err", err, "in", backoff)
				wait()
				continue
			}
			id = grant.ID
		}
		alive, err := c.cli.KeepAlive(c.ctx, id)
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
	resp, err := c.cli.TimeToLive(ctx, id)
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
