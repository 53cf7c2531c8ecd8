package zookeeper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/registry"
)

// ephemeral keeps one ephemeral node alive for as long as its context: it
// re-creates the node as soon as a new session exists after expiry, and
// when somebody deletes it by hand. Registrations are sequential nodes
// (<dir>/<name>_<seq>, as Airbnb's nerve writes them); acks have fixed names.
type ephemeral struct {
	c          *Client
	dir        string
	child      string // the name, or the prefix ZooKeeper appends a sequence to
	sequential bool
	ctx        context.Context
	cancel     context.CancelFunc
	kick       chan struct{}
	firstOK    chan struct{} // closed after the first successful write
	done       chan struct{}
	log        interface{ Info(string, ...any) }

	mu        sync.Mutex
	data      []byte
	node      string // current node path, "" before the first create
	owner     int64  // session that created node
	uncertain int64  // session in which a create ended without an answer
	removeErr error
}

func (c *Client) startEphemeral(ctx context.Context, dir, child string, sequential bool, data []byte) *ephemeral {
	e := &ephemeral{
		c: c, dir: dir, child: child, sequential: sequential, data: data,
		kick: make(chan struct{}, 1), firstOK: make(chan struct{}), done: make(chan struct{}),
		log: c.log.With("node", dir+"/"+child),
	}
	e.ctx, e.cancel = context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, e.cancel)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer stop()
		e.run()
	}()
	return e
}

// waitFirst waits for the first write; on failure it stops the keeper,
// which deletes whatever the first write may still create.
func (e *ephemeral) waitFirst(ctx context.Context) error {
	ctx, cancel := e.c.opContext(ctx)
	defer cancel()
	select {
	case <-e.firstOK:
		return nil
	case <-ctx.Done():
		e.cancel()
		if errors.Is(e.c.ctx.Err(), context.Canceled) {
			return registry.ErrClosed
		}
		return fmt.Errorf("zookeeper: write %s/%s: %w", e.dir, e.child, ctx.Err())
	}
}

func (e *ephemeral) run() {
	defer close(e.done)
	backoff := 100 * time.Millisecond
	first := true
	for {
		_, _, changed := e.c.session()
		watch, err := e.ensure()
		var retry <-chan time.Time
		if err != nil {
			if !errors.Is(err, errNoSession) {
				e.log.Info("ephemeral write failed; retrying", "err", err, "in", backoff)
				retry = time.After(backoff)
				backoff = min(2*backoff, 5*time.Second)
			}
		} else {
			backoff = 100 * time.Millisecond
			if first {
				close(e.firstOK)
				first = false
			}
		}
		select {
		case <-e.ctx.Done():
			e.remove()
			return
		case <-changed:
		case <-watch:
		case <-retry:
		case <-e.kick:
		}
	}
}

// ensure makes sure the node exists in the current session with the current
// data, and returns a watch that fires when it changes or vanishes.
func (e *ephemeral) ensure() (<-chan zk.Event, error) {
	ok, sid, _ := e.c.session()
	if !ok {
		return nil, errNoSession
	}
	conn := e.c.conn
	e.mu.Lock()
	node, owner, data, uncertain := e.node, e.owner, e.data, e.uncertain
	e.mu.Unlock()

	if node != "" && owner == sid {
		exists, stat, w, err := conn.ExistsW(node)
		e.c.countRead("exists", err)
		if err != nil {
			return nil, err
		}
		if exists && stat.EphemeralOwner == sid {
			return w, nil
		}
	}
	if err := e.c.ensurePath(e.dir); err != nil {
		return nil, err
	}
	var created string
	if e.sequential && uncertain == sid {
		// A create in this session may have happened without its answer
		// reaching us: adopt that node rather than register twice.
		found, err := e.findOwn(sid)
		if err != nil {
			return nil, err
		}
		created = found
	}
	if created == "" {
		var err error
		created, err = e.create(sid, data)
		if err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	e.node, e.owner, e.uncertain = created, sid, 0
	stale := !bytes.Equal(e.data, data)
	e.mu.Unlock()
	if node != "" {
		e.c.m.Reregistrations.WithLabelValues(backendName).Inc()
		e.log.Info("ephemeral node re-created", "path", created)
	}
	if stale { // Update raced with the create: let the next pass write it
		e.kickNow()
	}
	_, _, w, err := conn.ExistsW(created)
	e.c.countRead("exists", err)
	return w, err
}

func (e *ephemeral) create(sid int64, data []byte) (string, error) {
	conn := e.c.conn
	acl := zk.WorldACL(zk.PermAll)
	if e.sequential {
		p, err := conn.Create(e.dir+"/"+e.child, data, zk.FlagEphemeral|zk.FlagSequence, acl)
		e.c.countWrite("create", err)
		if err != nil {
			if errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) {
				e.mu.Lock()
				e.uncertain = sid
				e.mu.Unlock()
			}
			return "", err
		}
		return p, nil
	}
	p := e.dir + "/" + e.child
	_, err := conn.Create(p, data, zk.FlagEphemeral, acl)
	e.c.countWrite("create", err)
	if errors.Is(err, zk.ErrNodeExists) {
		// Left by an earlier session of ours (not yet expired) or taken
		// over by another process with the same id: the newest writer wins.
		_, stat, gerr := conn.Get(p)
		e.c.countRead("get", gerr)
		if gerr != nil {
			return "", gerr
		}
		if stat.EphemeralOwner == sid {
			_, err = conn.Set(p, data, -1)
			e.c.countWrite("set", err)
			return p, err
		}
		err = conn.Delete(p, stat.Version)
		e.c.countWrite("delete", err)
		if err == nil {
			err = errors.New("replaced a node of another session; creating again")
		}
	}
	return p, err
}

func (e *ephemeral) findOwn(sid int64) (string, error) {
	names, _, err := e.c.conn.Children(e.dir)
	e.c.countRead("children", err)
	if err != nil {
		return "", err
	}
	for _, n := range names {
		if !strings.HasPrefix(n, e.child) {
			continue
		}
		exists, stat, err := e.c.conn.Exists(e.dir + "/" + n)
		e.c.countRead("exists", err)
		if err != nil {
			return "", err
		}
		if exists && stat.EphemeralOwner == sid {
			return e.dir + "/" + n, nil
		}
	}
	return "", nil
}

// remove deletes the node when this session still owns it; otherwise the
// server already dropped it with its session.
func (e *ephemeral) remove() {
	e.mu.Lock()
	node, owner := e.node, e.owner
	e.mu.Unlock()
	ok, sid, _ := e.c.session()
	if node == "" || !ok || sid != owner {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := call(ctx, func() error {
		err := e.c.conn.Delete(node, -1)
		e.c.countWrite("delete", err)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		return err
	})
	e.mu.Lock()
	e.removeErr = err
	e.mu.Unlock()
}

func (e *ephemeral) kickNow() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// update writes new data to the node; if the node is gone, the keeper
// re-creates it with the new data.
func (e *ephemeral) update(ctx context.Context, data []byte) error {
	e.mu.Lock()
	e.data = data
	node := e.node
	e.mu.Unlock()
	if node == "" {
		e.kickNow()
		return nil
	}
	ctx, cancel := e.c.opContext(ctx)
	defer cancel()
	err := call(ctx, func() error {
		_, err := e.c.conn.Set(node, data, -1)
		e.c.countWrite("set", err)
		return err
	})
	if errors.Is(err, zk.ErrNoNode) {
		e.kickNow()
		return nil
	}
	if err != nil {
		return fmt.Errorf("zookeeper: update %s: %w", node, err)
	}
	return nil
}

// registration is a registry.Registration backed by an ephemeral keeper.
type registration struct{ e *ephemeral }

func (r registration) Key() string {
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	return r.e.node
}

func (r registration) Update(ctx context.Context, inst registry.Instance) error {
	data, err := inst.Encode()
	if err != nil {
		return err
	}
	return r.e.update(ctx, data)
}

func (r registration) Deregister(ctx context.Context) error {
	r.e.cancel()
	select {
	case <-r.e.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	return r.e.removeErr
}

// Register implements registry.Backend.
func (c *Client) Register(ctx context.Context, dir string, inst registry.Instance) (registry.Registration, error) {
	if err := ValidatePath(dir); err != nil {
		return nil, fmt.Errorf("zookeeper: register: path %w", err)
	}
	data, err := inst.Encode()
	if err != nil {
		return nil, fmt.Errorf("zookeeper: register: %w", err)
	}
	name := inst.Name
	if name == "" {
		name = strings.NewReplacer(":", "_", "[", "", "]", "").Replace(inst.Address())
	}
	e := c.startEphemeral(ctx, dir, name+"_", true, data)
	if err := e.waitFirst(ctx); err != nil {
		return nil, err
	}
	return registration{e}, nil
}
