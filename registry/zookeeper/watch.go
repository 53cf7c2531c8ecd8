package zookeeper

import (
	"context"
	"errors"
	"log/slog"
	"path"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// subscriber collects what changed under one watched directory between two
// passes of its watch loop. notify runs on the client's event callback.
type subscriber struct {
	dir  string
	wake chan struct{}

	mu      sync.Mutex
	pending work
}

// work is what a watch pass must do: re-list the children, re-read every
// child (after a new session, whose watches are gone), re-read some children.
type work struct {
	list, resync bool
	// reconnect: the list or resync follows a session event, which the
	// whole fleet sees at once (a leader change, an ensemble restart):
	// it is spread and bounded (see relistSpread).
	reconnect bool
	data      map[string]bool
}

func (w *work) merge(o work) {
	w.list = w.list || o.list
	w.resync = w.resync || o.resync
	w.reconnect = w.reconnect || o.reconnect
	for n := range o.data {
		if w.data == nil {
			w.data = map[string]bool{}
		}
		w.data[n] = true
	}
}

func (w work) empty() bool { return !w.list && !w.resync && len(w.data) == 0 }

func (s *subscriber) notify(ev zk.Event, newSession, reconnected bool) {
	s.mu.Lock()
	switch {
	case ev.Type == zk.EventSession:
		switch {
		case newSession:
			s.pending.resync, s.pending.reconnect = true, true
		case reconnected:
			// Watches survive a reconnect within the session (the client
			// re-sets them), but re-list once so nothing that happened
			// while disconnected can be missed.
			s.pending.list, s.pending.reconnect = true, true
		default:
			s.mu.Unlock()
			return
		}
	case ev.Type == zk.EventNotWatching:
		s.pending.resync = true
	case ev.Path == s.dir:
		s.pending.list = true
	case ev.Type == zk.EventNodeDataChanged:
		s.pending.merge(work{data: map[string]bool{path.Base(ev.Path): true}})
	default:
		s.pending.list = true
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) take() work {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.pending
	s.pending = work{}
	return w
}

func (c *Client) subscribe(dir string) (*subscriber, func()) {
	s := &subscriber{dir: dir, wake: make(chan struct{}, 1), pending: work{resync: true}}
	s.wake <- struct{}{}
	c.mu.Lock()
	if c.subs[dir] == nil {
		c.subs[dir] = map[*subscriber]struct{}{}
	}
	c.subs[dir][s] = struct{}{}
	c.mu.Unlock()
	return s, func() {
		c.mu.Lock()
		delete(c.subs[dir], s)
		if len(c.subs[dir]) == 0 {
			delete(c.subs, dir)
		}
		c.mu.Unlock()
	}
}

// entry is one child as last read.
type entry[T any] struct {
	val   T
	ok    bool  // decoded and valid
	mzxid int64 // of the data read; 0 when decoded from the name
	czxid int64 // the node's creation: registration order; 0 when decoded from the name
}

// codec turns a child into a value: from its name alone when the name
// carries the record (then no read is needed), else from its data.
type codec[T any] struct {
	fromName func(name string) (val T, handled bool, err error)
	fromData func(name string, data []byte) (T, error)
	// quiet reports errors that drop a record without counting it as bad.
	quiet func(error) bool
}

var errNoSession = errors.New("zookeeper: no session")

// After a session event every watch of a client lists its directory again,
// and every client of a fleet sees the event together: a leader change
// drops every connection of the ensemble, an ensemble restart every
// session's. Unspread, N hosts × S services re-lists hit the ensemble in
// the same few milliseconds as it comes back (synapse #292, #299). So each
// watch waits a random time within relistSpread (jitter from
// internal/backoff) before it lists, and a client runs at most
// relistConcurrency of those lists (each with its reads) at a time. A
// watch keeps serving its last set meanwhile. A change made while the
// client was away still arrives at once when its watch fires (go-zookeeper
// re-arms the watches on a reconnect, and the server fires those whose
// node changed): that pass lists, and is the relist. Otherwise it arrives
// within relistSpread plus the lists ahead.
var (
	relistSpread      = 2 * time.Second
	relistConcurrency = 8
)

// relistDelay is one watch's wait before its relist: uniform in
// [0, relistSpread]. backoff hands out [d/2, d]; stretched to start at 0.
func relistDelay() time.Duration {
	if relistSpread <= 0 {
		return 0
	}
	return 2*backoff.New(relistSpread, relistSpread).Next() - relistSpread
}

// fetchWorkers bounds the concurrent reads of one watch pass: enough to hide
// the round trip when thousands of children arrive at once.
const fetchWorkers = 16

// fetchConcurrency bounds the passes of many reads a client runs at once.
const fetchConcurrency = 16

// watchChildren keeps entries in step with the children of dir and calls
// emit after every pass that succeeded, with the entries and the revision
// (the largest zxid seen: the directory's pzxid or a child's mzxid). It reads
// only what changed, never removes an entry unless ZooKeeper said it is gone,
// and returns when ctx ends (or emit returns false).
func watchChildren[T any](ctx context.Context, c *Client, dir string, cd codec[T], emit func(map[string]entry[T], int64) bool) error {
	s, unsubscribe := c.subscribe(dir)
	defer unsubscribe()
	w := newChildWatch(ctx, c, dir, cd, emit, s)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return registry.ErrClosed
		case <-s.wake:
		case <-w.retry:
		case <-w.hold:
			w.hold = nil
		}
		if done, err := w.step(); done {
			return err
		}
	}
}

// childWatch is watchChildren's state. It lives on the heap, and the
// work after a wake-up is a method of its own, so that the goroutine,
// parked in watchChildren's select between changes, has a shallow stack:
// with a watch per service, a stack the runtime can shrink to 4 KB (the
// frames below a quarter of it) rather than 8 KB is 4 MB less per 1000
// watches. TestWatchStackStaysSmall keeps it so.
type childWatch[T any] struct {
	ctx     context.Context
	c       *Client
	dir     string
	cd      codec[T]
	emit    func(map[string]entry[T], int64) bool
	s       *subscriber
	b       *backoff.Backoff
	entries map[string]entry[T]
	peak    int // the most entries since entries was made
	pzxid   int64
	todo    work
	retry   <-chan time.Time
	hold    <-chan time.Time
	held    bool // the relist after the last session event waited its turn
}

//go:noinline
func newChildWatch[T any](ctx context.Context, c *Client, dir string, cd codec[T], emit func(map[string]entry[T], int64) bool, s *subscriber) *childWatch[T] {
	return &childWatch[T]{ctx: ctx, c: c, dir: dir, cd: cd, emit: emit, s: s,
		b: backoff.New(100*time.Millisecond, 5*time.Second), entries: map[string]entry[T]{}}
}

// logger is the client's logger with the path. Made when something is
// logged (rarely: failures, bad records), not kept per watch: 1000 watches each kept a copy
// of the handler with the attribute (0.2 MB).
func (w *childWatch[T]) logger() *slog.Logger {
	return w.c.log.With("path", w.dir)
}

// Warn logs with the path: watchPass's logger.
func (w *childWatch[T]) Warn(msg string, args ...any) { w.logger().Warn(msg, args...) }

// step does what a wake-up calls for; done: the watch ends with err.
func (w *childWatch[T]) step() (done bool, err error) {
	w.retry = nil
	wk := w.s.take()
	w.todo.merge(wk)
	if w.todo.empty() {
		return false, nil
	}
	// A watch that fired (setWatches re-arms them on a reconnect and
	// fires those whose node changed meanwhile) is a change to apply
	// now: its pass lists, which is the relist too.
	fired := !wk.reconnect && !wk.empty()
	if w.hold != nil && !fired {
		return false, nil
	}
	if w.todo.reconnect && !w.held && !fired {
		w.held = true
		w.hold = time.After(relistDelay())
		return false, nil
	}
	err = w.c.relist(w.ctx, w.todo.reconnect, func() error {
		return watchPass(w.c, w.dir, w.cd, w.entries, &w.pzxid, &w.todo, w)
	})
	if err == nil && w.todo.empty() {
		w.todo.reconnect, w.held = false, false
	}
	if err != nil {
		if !errors.Is(err, errNoSession) {
			w.logger().Debug("watch pass failed; keeping the last set", "err", err)
		}
		w.retry = w.b.After()
		return false, nil
	}
	w.b.Reset()
	w.compact()
	rev := w.pzxid
	for _, e := range w.entries {
		rev = max(rev, e.mzxid)
	}
	if !w.emit(w.entries, rev) {
		return true, w.ctx.Err()
	}
	return false, nil
}

// compact copies entries into a map of its size once it holds half of
// the most it held. A Go map never shrinks: a service whose backends were
// all replaced (the new ones registered before the old ones left) would
// keep a map of twice its size for good.
func (w *childWatch[T]) compact() {
	w.peak = max(w.peak, len(w.entries))
	if w.peak == 0 || len(w.entries)*2 > w.peak {
		return
	}
	m := make(map[string]entry[T], len(w.entries))
	for k, e := range w.entries {
		m[k] = e
	}
	w.entries, w.peak = m, len(m)
}

// relist runs pass, holding one of the client's relist slots when it
// follows a session event.
func (c *Client) relist(ctx context.Context, afterSession bool, pass func() error) error {
	if !afterSession {
		return pass()
	}
	select {
	case c.relists <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return registry.ErrClosed
	}
	if c.relistHook != nil {
		c.relistHook(+1)
	}
	defer func() {
		if c.relistHook != nil {
			c.relistHook(-1)
		}
		<-c.relists
	}()
	return pass()
}

// watchPass does the work in todo, leaving in it whatever failed.
func watchPass[T any](c *Client, dir string, cd codec[T], entries map[string]entry[T], pzxid *int64, todo *work, log interface {
	Warn(string, ...any)
}) error {
	if ok, _, _ := c.session(); !ok {
		return errNoSession
	}
	if todo.list || todo.resync {
		names, stat, err := c.conn.ChildrenWatch(dir)
		c.countRead("children", err)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			exists, _, err := c.conn.ExistsWatch(dir)
			c.countRead("exists", err)
			if err != nil {
				return err
			}
			if exists { // created in between: list again
				return errors.New("directory appeared while listing")
			}
			names, *pzxid = nil, 0
		case err != nil:
			return err
		default:
			*pzxid = stat.Pzxid
		}
		present := make(map[string]bool, len(names))
		for _, n := range names {
			present[n] = true
			if _, known := entries[n]; !known || todo.resync {
				todo.merge(work{data: map[string]bool{n: true}})
			}
		}
		for n := range entries {
			if !present[n] {
				delete(entries, n)
			}
		}
		for n := range todo.data {
			if !present[n] {
				delete(todo.data, n)
			}
		}
		todo.list, todo.resync = false, false
	}
	if len(todo.data) == 0 {
		return nil
	}

	if len(todo.data) > 1 {
		// Passes of many reads (a first list, a resync) share the
		// client's fetch slots: 1000 watches starting together would
		// otherwise run ~20 goroutines each at once (the workers and
		// a call each), whose descriptors (never freed by the runtime)
		// and stacks were synapse's peak memory; a lone changed child
		// is read at once.
		select {
		case c.fetchSlots <- struct{}{}:
		case <-c.ctx.Done():
			return registry.ErrClosed
		}
		defer func() { <-c.fetchSlots }()
	}
	names := make(chan string)
	results := make(chan fetched[T])
	var wg sync.WaitGroup
	for range min(fetchWorkers, len(todo.data)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range names {
				results <- fetchChild(c, dir, n, cd)
			}
		}()
	}
	go func() {
		for n := range todo.data {
			names <- n
		}
		close(names)
		wg.Wait()
		close(results)
	}()
	var firstErr error
	done := make([]string, 0, len(todo.data))
	for r := range results {
		switch {
		case r.err != nil:
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		case r.gone:
			delete(entries, r.name)
		default:
			if r.badData != nil {
				if cd.quiet == nil || !cd.quiet(r.badData) {
					c.m.RecordsSkipped.WithLabelValues(backendName, dir).Inc()
					log.Warn("skipping bad registry record", "node", dir+"/"+r.name, "err", r.badData)
				}
			}
			entries[r.name] = r.e
		}
		done = append(done, r.name)
	}
	for _, n := range done {
		delete(todo.data, n)
	}
	return firstErr
}

// fetched is one child read by a watch pass.
type fetched[T any] struct {
	name    string
	e       entry[T]
	gone    bool
	err     error // connection-level: retry
	badData error // record-level: skip and count
}

func fetchChild[T any](c *Client, dir, name string, cd codec[T]) (r fetched[T]) {
	r.name = name
	if cd.fromName != nil {
		if v, handled, err := cd.fromName(name); handled {
			r.e, r.badData = entry[T]{val: v, ok: err == nil}, err
			return r
		}
	}
	data, stat, err := c.conn.GetWatch(dir + "/" + name)
	c.countRead("get", err)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		r.gone = true
	case err != nil:
		r.err = err
	default:
		v, derr := cd.fromData(name, data)
		r.e, r.badData = entry[T]{val: v, ok: derr == nil, mzxid: stat.Mzxid, czxid: stat.Czxid}, derr
	}
	return r
}

// Watch implements registry.Backend: the valid instances under dir.
func (c *Client) Watch(ctx context.Context, dir string, opts registry.DecodeOptions, out chan<- []registry.Instance) error {
	if err := ValidatePath(dir); err != nil {
		return err
	}
	// Set up in a function of its own: this frame stays on the watch
	// goroutine's stack for its life (see childWatch).
	cd, emit := c.instanceWatch(ctx, dir, opts, out)
	return watchChildren(ctx, c, dir, cd, emit)
}

//go:noinline
func (c *Client) instanceWatch(ctx context.Context, dir string, opts registry.DecodeOptions, out chan<- []registry.Instance) (codec[registry.Instance], func(map[string]entry[registry.Instance], int64) bool) {
	cd := codec[registry.Instance]{
		fromName: func(name string) (registry.Instance, bool, error) {
			return registry.DecodeChildName(name, opts)
		},
		fromData: func(_ string, data []byte) (registry.Instance, error) {
			return registry.Decode(data, opts)
		},
		quiet: func(err error) bool { return errors.Is(err, registry.ErrNotAlive) },
	}
	updates := c.m.WatchUpdates.WithLabelValues(backendName, dir)
	var last []registry.Instance
	first := true
	return cd, func(entries map[string]entry[registry.Instance], _ int64) bool {
		set := registry.SetOf(entries, func(e entry[registry.Instance]) (registry.Instance, bool) {
			inst := e.val
			inst.Seq = e.czxid
			return inst, e.ok
		})
		if !first && registry.EqualSets(set, last) {
			return true
		}
		select {
		case out <- set:
			first, last = false, set
			updates.Inc()
			return true
		case <-ctx.Done():
			return false
		}
	}
}
