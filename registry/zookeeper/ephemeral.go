package zookeeper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// ephemeral keeps one ephemeral node alive for as long as its context: it
// re-creates the node as soon as a new session exists after expiry, and
// when somebody deletes it by hand, and writes its data back when somebody
// rewrites it. Registrations are sequential nodes (<dir>/<name>_<seq>, as
// Airbnb's nerve writes them); acks have fixed names.
//
// When its context ends the keeper removes the node, and keeps trying until
// the removal is confirmed: a session outlives an outage of the ensemble, so
// a node that could not be deleted while ZooKeeper was out of reach would
// otherwise stay registered after it returns.
type ephemeral struct {
	c          *Client
	dir        string
	child      string // the name, or the prefix ZooKeeper appends a sequence to
	sequential bool
	ctx        context.Context
	cancel     context.CancelFunc
	kick       chan struct{}
	firstOK    chan struct{} // closed after the first successful write
	refused    chan error    // the first write was refused for lack of permission
	done       chan struct{} // closed once the removal is confirmed (or the client closed)
	log        interface{ Info(string, ...any) }
	repairs    *backoff.Pacer

	mu        sync.Mutex
	data      []byte
	node      string // current node path, "" before the first create
	owner     int64  // session that created node
	uncertain int64  // session in which a create ended without an answer
	version   int32  // the node's version after our last write; -1: unknown
	removeErr error  // the last removal attempt's error; nil once done
}

// readBackEvery is how often a keeper reads its node back, to catch a
// change a missed watch did not report: one read per node per interval.
var readBackEvery atomic.Int64

func init() { readBackEvery.Store(int64(30 * time.Second)) }

// ignoreWatch makes keepers act as if every watch event were lost: tests of
// the read-back set it.
var ignoreWatch atomic.Bool

func (c *Client) startEphemeral(ctx context.Context, dir, child string, sequential bool, data []byte) *ephemeral {
	e := &ephemeral{
		c: c, dir: dir, child: child, sequential: sequential, data: data,
		kick: make(chan struct{}, 1), firstOK: make(chan struct{}), refused: make(chan error, 1), done: make(chan struct{}),
		log:     c.log.With("node", dir+"/"+child),
		repairs: backoff.NewPacer(100*time.Millisecond, 5*time.Second, 5*time.Second),
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
	case err := <-e.refused:
		// Retrying cannot help: the identity is wrong (or missing).
		e.cancel()
		return err
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
	retries := backoff.New(100*time.Millisecond, 5*time.Second)
	readBack := time.NewTicker(time.Duration(readBackEvery.Load()))
	defer readBack.Stop()
	first := true
	var retry <-chan time.Time
	for e.ctx.Err() == nil {
		_, _, changed := e.c.session()
		watch, err := e.ensure()
		retry = nil
		var paced *pacedError
		switch {
		case errors.As(err, &paced):
			retry = time.After(paced.d)
		case errors.Is(err, errNoSession):
			// the next session state change brings the next pass
		case err != nil:
			var ae *AuthError
			if first && errors.As(err, &ae) {
				select {
				case e.refused <- err:
				default:
				}
			}
			d := retries.Next()
			e.log.Info("ephemeral write failed; retrying", "err", err, "in", d)
			retry = time.After(d)
		default:
			retries.Reset()
			if first {
				close(e.firstOK)
				first = false
			}
		}
		// Wait for a reason to look again; a read-back that finds the node
		// as it should be is no reason.
		for waiting := true; waiting; {
			select {
			case <-e.ctx.Done():
				waiting = false
			case <-changed:
				waiting = false
			case <-watch:
				waiting = ignoreWatch.Load()
			case <-retry:
				waiting = false
			case <-e.kick:
				waiting = false
			case <-readBack.C:
				waiting = err != nil || e.intact()
			}
		}
	}
	e.removeUntilConfirmed()
}

// intact reads the node back once (no watch) and reports whether it is
// ours with our data. An unanswered read says nothing: true.
func (e *ephemeral) intact() bool {
	ok, sid, _ := e.c.session()
	e.mu.Lock()
	node, owner, want := e.node, e.owner, e.data
	e.mu.Unlock()
	if !ok || node == "" || owner != sid {
		return true // ensure is due anyway on the session change
	}
	var data []byte
	var stat *zk.Stat
	ctx, cancel := context.WithTimeout(e.ctx, e.c.cfg.OpTimeout)
	defer cancel()
	err := call(ctx, func() error {
		var err error
		data, stat, err = e.c.conn.Get(node)
		e.c.countRead("get", err)
		return err
	})
	switch {
	case errors.Is(err, zk.ErrNoNode):
		e.log.Info("read-back: node gone without a watch event; re-creating", "path", node)
		return false
	case err != nil:
		return true
	case stat.EphemeralOwner != sid || !bytes.Equal(data, want):
		e.log.Info("read-back: node changed without a watch event; writing it back", "path", node)
		return false
	}
	return true
}

// pacedError holds off a repair of a node somebody else keeps changing.
type pacedError struct{ d time.Duration }

func (p *pacedError) Error() string { return fmt.Sprintf("repair held off for %v", p.d) }

// ensure makes sure the node exists in the current session with the current
// data, and returns a watch that fires when it changes or vanishes.
func (e *ephemeral) ensure() (<-chan zk.Event, error) {
	ok, sid, _ := e.c.session()
	if !ok {
		return nil, errNoSession
	}
	conn := e.c.conn
	e.mu.Lock()
	node, owner, uncertain := e.node, e.owner, e.uncertain
	e.mu.Unlock()

	if node != "" && owner == sid {
		exists, stat, w, err := conn.ExistsW(node)
		e.c.countRead("exists", err)
		if err != nil {
			return nil, err
		}
		if exists && stat.EphemeralOwner == sid {
			if err := e.keepData(node, stat); err != nil {
				return nil, err
			}
			return w, nil
		}
		// Deleted by somebody else while our session lives: put it back,
		// paced in case another writer keeps deleting it.
		if d := e.repairs.Hold(time.Now()); d > 0 {
			return nil, &pacedError{d}
		}
	}
	if err := e.c.ensurePath(e.dir); err != nil {
		return nil, err
	}
	e.mu.Lock()
	data := e.data
	e.mu.Unlock()
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
	version := int32(-1) // adopted: written in its time, compare on the next pass
	if created == "" {
		var err error
		created, version, err = e.create(sid, data)
		if err != nil {
			return nil, err
		}
	}
	if e.sequential {
		e.claim(node, created)
	}
	e.mu.Lock()
	e.node, e.owner, e.uncertain, e.version = created, sid, 0, version
	stale := !bytes.Equal(e.data, data)
	if stale {
		e.version = -1 // not the data it should hold: compare on the next pass
	}
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
	if err != nil {
		// The node is written; only its watch is missing. The session
		// change that failed the call brings the next pass, which sets it.
		e.kickNow()
		return nil, nil
	}
	return w, nil
}

// keepData writes our data back when somebody else rewrote the node. The
// node's version tells: unchanged since our last write, nothing is read.
func (e *ephemeral) keepData(node string, stat *zk.Stat) error {
	e.mu.Lock()
	known := e.version
	e.mu.Unlock()
	if stat.Version == known {
		return nil
	}
	conn := e.c.conn
	got, stat, err := conn.Get(node)
	e.c.countRead("get", err)
	if errors.Is(err, zk.ErrNoNode) {
		e.kickNow() // deleted meanwhile: the next pass re-creates it
		return nil
	}
	if err != nil {
		return err
	}
	e.mu.Lock()
	data := e.data
	if bytes.Equal(got, data) {
		e.version = stat.Version
	}
	e.mu.Unlock()
	if bytes.Equal(got, data) {
		return nil
	}
	// Rewritten by somebody else: write ours back. The version guards
	// against an Update landing meanwhile (whose watch brings the next
	// pass); the pacer against another writer that insists.
	if d := e.repairs.Hold(time.Now()); d > 0 {
		return &pacedError{d}
	}
	stat, err = conn.Set(node, data, stat.Version)
	e.c.countWrite("set", err)
	switch {
	case errors.Is(err, zk.ErrBadVersion), errors.Is(err, zk.ErrNoNode):
		e.kickNow()
		return nil
	case err != nil:
		return err
	}
	e.noteWritten(data, stat)
	e.c.m.Reregistrations.WithLabelValues(backendName).Inc()
	e.log.Info("ephemeral node rewritten by another writer; wrote ours back", "path", node)
	return nil
}

// noteWritten records the version of a write of data, if data is still
// what the node should hold.
func (e *ephemeral) noteWritten(data []byte, stat *zk.Stat) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if stat != nil && bytes.Equal(e.data, data) {
		e.version = stat.Version
	}
}

// create makes the node; it returns its path and its version (0 for a new
// node).
func (e *ephemeral) create(sid int64, data []byte) (string, int32, error) {
	conn := e.c.conn
	acl := e.c.acl()
	if e.sequential {
		p, err := conn.Create(e.dir+"/"+e.child, data, zk.FlagEphemeral|zk.FlagSequence, acl)
		e.c.countWrite("create", err)
		if err != nil {
			if errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) {
				e.mu.Lock()
				e.uncertain = sid
				e.mu.Unlock()
			}
			return "", 0, e.c.denied(e.dir+"/"+e.child, err)
		}
		return p, 0, nil
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
			return "", 0, gerr
		}
		if stat.EphemeralOwner == sid {
			st, err := conn.Set(p, data, -1)
			e.c.countWrite("set", err)
			if err != nil {
				return "", 0, err
			}
			return p, st.Version, nil
		}
		err = conn.Delete(p, stat.Version)
		e.c.countWrite("delete", err)
		if err == nil {
			err = errors.New("replaced a node of another session; creating again")
		}
	}
	return p, 0, e.c.denied(p, err)
}

// claims maps every node a keeper of this process holds to its keeper, so
// that a keeper looking for a node whose create went unanswered never takes
// (adopts or deletes) a sibling's node of the same name in the same session.
var claims sync.Map // claimKey → *ephemeral

type claimKey struct {
	c    *Client
	path string
}

// claim records node as e's, dropping e's claim on its previous node.
func (e *ephemeral) claim(prev, node string) {
	if prev != "" && prev != node {
		claims.CompareAndDelete(claimKey{e.c, prev}, e)
	}
	if node != "" {
		claims.Store(claimKey{e.c, node}, e)
	}
}

// findOwn looks for the node a create in session sid may have made without
// its answer reaching us: <dir>/<child><10 digits>, owned by sid, and not
// held by another keeper of this process.
func (e *ephemeral) findOwn(sid int64) (string, error) {
	names, _, err := e.c.conn.Children(e.dir)
	e.c.countRead("children", err)
	if err != nil {
		return "", err
	}
	for _, n := range names {
		seq, ok := strings.CutPrefix(n, e.child)
		if !ok || !isSequence(seq) {
			continue
		}
		p := e.dir + "/" + n
		if k, held := claims.Load(claimKey{e.c, p}); held && k != e {
			continue
		}
		exists, stat, err := e.c.conn.Exists(p)
		e.c.countRead("exists", err)
		if err != nil {
			return "", err
		}
		if exists && stat.EphemeralOwner == sid {
			return p, nil
		}
	}
	return "", nil
}

// isSequence reports whether s is the 10-digit counter ZooKeeper appends.
func isSequence(s string) bool {
	if len(s) != 10 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// removeUntilConfirmed deletes the node and retries until the removal is
// confirmed: deleted (or already gone), or the session that owned it is
// known to be over (a new session exists, or the last one expired). Only
// Close ends it earlier, with one bounded attempt: Close ends the session,
// which takes the node with it.
func (e *ephemeral) removeUntilConfirmed() {
	// Without a session the next session change brings the next attempt;
	// this paces only errors ZooKeeper answers with.
	retries := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		_, _, changed := e.c.session()
		closing := e.c.ctx.Err() != nil
		done, err := e.removeOnce(closing)
		e.mu.Lock()
		e.removeErr = err
		node := e.node
		e.mu.Unlock()
		if done || closing {
			e.claim(node, "")
		}
		if done {
			return
		}
		if closing {
			e.mu.Lock()
			e.removeErr = fmt.Errorf("%w (removal of %s not confirmed: %v)", registry.ErrClosed, e.dir+"/"+e.child, err)
			e.mu.Unlock()
			return
		}
		var retry <-chan time.Time
		if !errors.Is(err, errNoSession) {
			d := retries.Next()
			e.log.Info("ephemeral node removal failed; retrying", "err", err, "in", d)
			retry = time.After(d)
		}
		select {
		case <-e.c.ctx.Done():
		case <-changed:
		case <-retry:
		}
	}
}

// removeOnce tries the removal once; done reports it confirmed.
func (e *ephemeral) removeOnce(closing bool) (done bool, err error) {
	e.mu.Lock()
	node, owner, uncertain := e.node, e.owner, e.uncertain
	e.mu.Unlock()
	if node == "" && uncertain == 0 {
		return true, nil // nothing was ever created
	}
	e.c.mu.Lock()
	expired := e.c.expired
	e.c.mu.Unlock()
	ok, sid, _ := e.c.session()
	switch {
	case !ok && expired:
		return true, nil // the session that owned it expired
	case !ok:
		return false, errNoSession
	case node == "" && uncertain != sid, node != "" && owner != sid:
		return true, nil // a new session: the old one took its node along
	}
	limit := e.c.cfg.OpTimeout
	if closing {
		limit = min(limit, 3*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if node == "" {
		// A create whose answer was lost: find what it may have made.
		err := call(ctx, func() error {
			var err error
			node, err = e.findOwn(sid)
			return err
		})
		if err != nil {
			return false, err
		}
		if node == "" {
			return true, nil
		}
	}
	err = call(ctx, func() error {
		err := e.c.conn.Delete(node, -1)
		e.c.countWrite("delete", err)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("zookeeper: delete %s: %w", node, err)
	}
	return true, nil
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
	if e.ctx.Err() != nil {
		return fmt.Errorf("zookeeper: update %s/%s: deregistered", e.dir, e.child)
	}
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
		st, err := e.c.conn.Set(node, data, -1)
		e.c.countWrite("set", err)
		if err == nil {
			e.noteWritten(data, st)
		}
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

// The registry.Keeper of an ephemeral node.

func (e *ephemeral) Key() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.node
}
func (e *ephemeral) Write(ctx context.Context, data []byte) error { return e.update(ctx, data) }
func (e *ephemeral) Stop()                                        { e.cancel() }
func (e *ephemeral) Stopped() <-chan struct{}                     { return e.done }
func (e *ephemeral) RemoveErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.removeErr
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
	return registry.Kept{Backend: backendName, Keeper: e}, nil
}
