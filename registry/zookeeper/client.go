// Package zookeeper is the ZooKeeper backend of the registry: ephemeral
// sequential registrations that survive session expiry, watches that read
// only what changed, and the override and ack records of synctl and synapse.
package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

const backendName = "zookeeper"

// Config configures a Client.
type Config struct {
	// Servers are the ensemble's host:port addresses.
	Servers []string
	// SessionTimeout is the ZooKeeper session timeout: how long a silent
	// client's ephemeral nodes outlive it. Default 10s; the server clamps
	// it to its own min/max (2 and 20 ticks by default).
	SessionTimeout time.Duration
	// Root holds the fleet-wide records: Root/overrides and Root/acks.
	// Default /syncstack.
	Root string
	// OpTimeout bounds a synchronous call (the first write of a
	// registration, an override write) that waits for a session. Default 10s.
	OpTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to registry.DefaultMetrics().
	Metrics *registry.Metrics
	// Auth is the digest identity of this process. Unset, it is read
	// from AuthFile, else from the file named by $SYNCSTACK_ZK_AUTH_FILE;
	// with none, every node created is writable by anyone (a warning says
	// so). Never take it from a command line: others can read those.
	Auth *Auth
	// AuthFile is a credential file (user:password, mode 0600 or 0640).
	AuthFile string

	// hostProvider replaces go-zookeeper's (which shuffles the servers):
	// tests use it to choose the server a session starts on.
	hostProvider zk.HostProvider
}

func (cfg *Config) finalize() error {
	if len(cfg.Servers) == 0 {
		return errors.New("zookeeper: servers: at least one host:port is required")
	}
	for i, s := range cfg.Servers {
		host, port, ok := strings.Cut(s, ":")
		if !ok || host == "" || port == "" {
			return fmt.Errorf("zookeeper: servers[%d]: %q is not host:port", i, s)
		}
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = 10 * time.Second
	}
	if cfg.SessionTimeout < 0 {
		return fmt.Errorf("zookeeper: session_timeout: %v is negative", cfg.SessionTimeout)
	}
	if cfg.Root == "" {
		cfg.Root = "/syncstack"
	}
	if err := ValidatePath(cfg.Root); err != nil {
		return fmt.Errorf("zookeeper: root: %w", err)
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
	return cfg.resolveAuth()
}

// ValidatePath checks a ZooKeeper path: absolute, no empty, "." or ".."
// element, no trailing slash, no control characters.
func ValidatePath(p string) error { return registry.ValidatePath(p) }

// Client is one ZooKeeper session shared by every registration, watch and
// override call of a process. It implements registry.Backend.
type Client struct {
	// Records are the fleet-wide records (overrides, acks, catalogs,
	// history) over the client's store: they implement those roles.
	registry.Records

	cfg  Config
	conn *zk.Conn
	log  *slog.Logger
	m    *registry.Metrics

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // keepers and watches

	mu         sync.Mutex
	changed    chan struct{}                       // closed and replaced on every session state change
	hasSess    bool                                // a session is established now
	hadSession bool                                // one ever was
	expired    bool                                // the last session expired and no new one exists yet
	subs       map[string]map[*subscriber]struct{} // by watched path
	acks       map[string]*ephemeral
	closed     bool
	authed     bool // the credentials were added (or there are none)

	// relists holds a slot per watch relisting after a session event
	// (relistConcurrency); relistHook, in tests, sees each start (+1) and
	// end (-1).
	relists    chan struct{}
	fetchSlots chan struct{} // passes of many reads at once (fetchConcurrency)
	relistHook func(delta int)

	// recvTimeout is go-zookeeper's read timeout for the session in force
	// (2/3 of the negotiated session timeout), learnt by the dialer's
	// connections; 0 until a session was established.
	recvTimeout atomic.Int64
}

var _ registry.Backend = (*Client)(nil)

// New validates cfg and starts connecting; it does not wait for a session,
// so a process can start while the ensemble is down.
func New(cfg Config) (*Client, error) {
	if err := cfg.finalize(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:        cfg,
		log:        cfg.Logger.With("registry", backendName),
		m:          cfg.Metrics,
		changed:    make(chan struct{}),
		subs:       map[string]map[*subscriber]struct{}{},
		acks:       map[string]*ephemeral{},
		authed:     cfg.Auth == nil,
		relists:    make(chan struct{}, relistConcurrency),
		fetchSlots: make(chan struct{}, fetchConcurrency),
	}
	c.Records = registry.Records{Store: store{c}, Root: cfg.Root}
	if cfg.Auth == nil {
		c.log.Warn("no ZooKeeper credentials (zk_auth_file or " + AuthFileEnv + "): the nodes this process creates are writable by anyone")
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	opts := options(
		zk.WithEventCallback(c.onEvent),
		zk.WithDialer(c.dial),
		zk.WithLogger(zkLogger{c.log}),
		zk.WithLogInfo(false),
		// The client's default buffers are 1.5 MB each way. Requests here
		// are small (records ≤ 16 KiB, watch re-arming in 128 KiB chunks);
		// replies are bounded by ZooKeeper's own 1 MB jute.maxbuffer.
		zk.WithMaxConnBufferSize(256<<10),
		zk.WithMaxBufferSize(1<<20))
	if cfg.hostProvider != nil {
		opts = append(opts, zk.WithHostProvider(cfg.hostProvider))
	}
	conn, _, err := zk.Connect(cfg.Servers, cfg.SessionTimeout, opts...)
	if err != nil {
		c.cancel()
		return nil, fmt.Errorf("zookeeper: connect %v: %w", cfg.Servers, err)
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.heartbeat()
	}()
	if cfg.Auth != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.authenticate()
		}()
	}
	return c, nil
}

// A server can stall without closing its connections: SIGSTOP, a disk that
// stops answering, a hung VM. go-zookeeper notices only when a read times
// out: after 2/3 of the session timeout on an established connection, and
// after ten times that while it waits for the answer to a connect request
// (a stalled server still accepts TCP connections), so a session that
// fails over onto a stalled server expires there. The client therefore
// dials through stallConn, which shortens both waits: a quarter of the
// session timeout between two packets, kept busy by a heartbeat every
// eighth, and a third of it for the connect answer. A session then leaves
// a stalled server with three quarters of its timeout left to reconnect
// elsewhere, and a watch on it catches up within about a quarter.

// dial is go-zookeeper's dialer.
func (c *Client) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	hs := c.cfg.SessionTimeout / 3
	if rt := time.Duration(c.recvTimeout.Load()); rt > 0 {
		hs = min(hs, rt/2) // a third of the negotiated timeout
	}
	return &stallConn{Conn: conn, c: c, handshake: hs}, nil
}

// stallConn caps the read deadlines go-zookeeper sets. Its first deadline
// is the connect request's; every later one is recvLoop's, set to the
// session's recvTimeout before each packet.
type stallConn struct {
	net.Conn
	c         *Client
	handshake time.Duration
	deadlines int // non-zero read deadlines set so far
}

func (s *stallConn) SetReadDeadline(t time.Time) error {
	// go-zookeeper sets deadlines from its connection goroutines one at a
	// time: the handshake, then the receive loop.
	if !t.IsZero() {
		s.deadlines++
	}
	switch {
	case s.deadlines <= 1:
		// The connect answer (go-zookeeper reads its body with no
		// deadline at all).
		t = time.Now().Add(s.handshake)
	case !t.IsZero():
		rt := time.Until(t)
		s.c.recvTimeout.Store(int64(rt))
		t = time.Now().Add(rt * 3 / 8) // a quarter of the session timeout
	}
	return s.Conn.SetReadDeadline(t)
}

// heartbeat sends a cheap read every eighth of the session timeout, so
// that a healthy connection carries a packet well within stallConn's
// quarter (go-zookeeper pings only every third).
func (c *Client) heartbeat() {
	for {
		every := c.cfg.SessionTimeout / 8
		if rt := time.Duration(c.recvTimeout.Load()); rt > 0 {
			every = rt * 3 / 16
		}
		t := time.NewTimer(every)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if ok, _, _ := c.session(); ok {
			// The answer (or the connection's end) comes within
			// stallConn's read timeout.
			c.conn.Exists("/")
		}
	}
}

// options collects go-zookeeper's connection options, whose type it does
// not export, into a slice that can grow.
func options[T any](o ...T) []T { return o }

// Close deletes this client's registrations and acks and ends the session.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.conn.Close()
	return nil
}

// onEvent runs on the ZooKeeper client's receive loop for every session and
// watch event: it must never block, so it only records and signals.
func (c *Client) onEvent(ev zk.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	newSession, reconnected := false, false
	if ev.Type == zk.EventSession {
		switch ev.State {
		case zk.StateHasSession:
			// The session id cannot be read here: this can run before
			// zk.Connect has returned the connection.
			newSession = !c.hadSession || c.expired
			reconnected = !newSession
			c.hasSess, c.hadSession, c.expired = true, true, false
			c.log.Debug("session established", "new", newSession)
		case zk.StateExpired:
			c.hasSess, c.expired = false, true
			c.m.SessionLosses.WithLabelValues(backendName).Inc()
			c.log.Warn("session expired; ephemeral records will be re-created on the next session")
		case zk.StateDisconnected, zk.StateConnecting:
			c.hasSess = false
		}
		close(c.changed)
		c.changed = make(chan struct{})
	}
	for _, p := range []string{ev.Path, parentOf(ev.Path)} {
		for s := range c.subs[p] {
			s.notify(ev, newSession, reconnected)
		}
	}
	if ev.Path == "" {
		for _, set := range c.subs {
			for s := range set {
				s.notify(ev, newSession, reconnected)
			}
		}
	}
}

// session returns whether a session is established now, its id, and a
// channel closed at the next session state change.
func (c *Client) session() (ok bool, id int64, changed <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasSess || c.conn == nil || !c.authed {
		return false, 0, c.changed
	}
	return c.conn.State() == zk.StateHasSession, c.conn.SessionID(), c.changed
}

// waitSession blocks until a session is established or ctx ends.
func (c *Client) waitSession(ctx context.Context) (int64, error) {
	for {
		ok, id, changed := c.session()
		if ok {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("zookeeper: no session with %v: %w", c.cfg.Servers, ctx.Err())
		case <-c.ctx.Done():
			return 0, registry.ErrClosed
		case <-changed:
		}
	}
}

// call runs fn (a blocking ZooKeeper request) and returns when it finishes or
// ctx ends; the go-zookeeper API takes no context.
func call(ctx context.Context, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// opContext bounds a synchronous call by OpTimeout and by the client's life.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// ensurePath creates p and its missing parents as persistent nodes.
func (c *Client) ensurePath(p string) error {
	if p == "/" || p == "" {
		return nil
	}
	exists, _, err := c.conn.Exists(p)
	c.countRead("exists", err)
	if err != nil {
		return err
	}
	if exists {
		return nil
	}
	if err := c.ensurePath(parentOf(p)); err != nil {
		return err
	}
	_, err = c.conn.Create(p, nil, 0, c.acl())
	c.countWrite("create", err)
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return c.denied(p, err)
	}
	return nil
}

func (c *Client) countRead(op string, err error) {
	c.m.Reads.WithLabelValues(backendName, op).Inc()
	if err != nil && !errors.Is(err, zk.ErrNoNode) {
		c.m.Errors.WithLabelValues(backendName, op).Inc()
	}
}

func (c *Client) countWrite(op string, err error) {
	c.m.Writes.WithLabelValues(backendName, op).Inc()
	if err != nil && !errors.Is(err, zk.ErrNodeExists) && !errors.Is(err, zk.ErrNoNode) {
		c.m.Errors.WithLabelValues(backendName, op).Inc()
	}
}

func parentOf(p string) string {
	if p == "" || p == "/" {
		return ""
	}
	return path.Dir(p)
}

// zkLogger sends go-zookeeper's log lines to slog at debug level: the
// client logs every reconnect attempt, which is noise at info level.
type zkLogger struct{ l *slog.Logger }

func (z zkLogger) Printf(format string, args ...any) {
	z.l.Debug(fmt.Sprintf(format, args...))
}

// SessionID is the id of the session in force, or 0 while there is none.
func (c *Client) SessionID() int64 {
	ok, id, _ := c.session()
	if !ok {
		return 0
	}
	return id
}
