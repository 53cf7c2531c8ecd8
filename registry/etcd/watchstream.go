package etcd

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/syncstack/syncstack/registry"
)

// watchStream carries every prefix watch of a pin over one gRPC watch
// stream, read by one goroutine that hands each response to its watch.
//
// clientv3's Watcher does the same over the wire, but keeps a goroutine, two
// channels and a context per watch: with a watch per service that was
// 1000 goroutines and ~6 MB of a synapse's 10k-backend footprint (stacks
// and heap; BENCHMARKS.md), for nothing the watches here use — they resume
// on their own (prefixWatch), from their own revision, on the next pin.
//
// A stream that fails (its member stalled and the pin was left, no leader,
// a broken connection) ends every watch on it; each resumes from its
// revision on a new stream. Creates are sent one at a time, each after the
// previous one is confirmed, as clientv3 does: etcd and its grpc-proxy
// confirm creates in order with the IDs they assign.
type watchStream struct {
	c      *Client
	p      *pin
	ctx    context.Context // ends the stream: the pin left, or the stream failed
	cancel context.CancelFunc
	opened time.Time

	sendMu sync.Mutex // grpc: one Send at a time
	mu     sync.Mutex
	stream pb.Watch_WatchClient // nil until open
	err    error                // why the stream ended; nil while it runs
	// creating are the watches whose create is sent (the first) or
	// waiting to be, in order; watching those etcd confirmed, by ID.
	creating []*streamWatch
	watching map[int64]*streamWatch
}

// streamWatch is one watch on a watchStream: its responses wait in queue
// for the watch's goroutine, which ready wakes.
type streamWatch struct {
	s     *watchStream
	req   *pb.WatchRequest
	ready chan struct{} // cap 1: something was queued
	// Guarded by s.mu.
	id        int64
	queue     []*pb.WatchResponse
	err       error // the stream ended under the watch
	ended     bool  // nothing more comes: a final response or err is queued
	cancelled bool  // its goroutine is done with it
}

// watches returns p's watch stream, opening one when there is none or the
// last one failed.
func (c *Client) watches(p *pin) *watchStream {
	p.streamMu.Lock()
	defer p.streamMu.Unlock()
	if s := p.stream; s != nil && s.ctx.Err() == nil {
		return s
	}
	s := &watchStream{c: c, p: p, watching: map[int64]*streamWatch{}, opened: time.Now()}
	s.ctx, s.cancel = context.WithCancel(p.ctx)
	p.stream = s
	ctx := c.watchContext(s.ctx)
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.wg.Add(1) // under c.mu: Close waits for it, or it does not start
	}
	c.mu.Unlock()
	if closed {
		s.fail(registry.ErrClosed)
		return s
	}
	go func() {
		defer c.wg.Done()
		s.run(ctx)
	}()
	return s
}

// watchRequest is the create request of a watch of the keys under prefix
// from revision rev.
func watchRequest(prefix string, rev int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)), StartRevision: rev,
	}}}
}

// run opens the stream and reads it until it fails.
func (s *watchStream) run(ctx context.Context) {
	// clientv3's own options for its watch streams: wait for the
	// connection rather than fail at once while it (re)connects (the pin's
	// monitor decides when a member is gone), and no cap on a response
	// (a resumed watch may get many events at once).
	stream, err := pb.NewWatchClient(s.p.cli.ActiveConnection()).Watch(ctx, grpc.WaitForReady(true), grpc.MaxCallRecvMsgSize(math.MaxInt32))
	if err != nil {
		s.fail(err)
		return
	}
	s.mu.Lock()
	s.stream = stream
	head := s.nextCreate()
	s.mu.Unlock()
	if head != nil {
		s.send(head.req)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			s.fail(err)
			return
		}
		s.dispatch(resp)
	}
}

// add starts watching req's key range (a create request) on the stream.
func (s *watchStream) add(req *pb.WatchRequest) *streamWatch {
	w := &streamWatch{s: s, req: req, ready: make(chan struct{}, 1), id: -1}
	s.mu.Lock()
	if s.err != nil {
		w.endLocked(s.err)
		s.mu.Unlock()
		return w
	}
	s.creating = append(s.creating, w)
	first := len(s.creating) == 1 && s.stream != nil
	s.mu.Unlock()
	if first {
		s.send(req)
	}
	return w
}

// nextCreate drops the cancelled watches at the head of creating that were
// never sent and returns the head, whose create is to be sent (nil: none).
// s.mu is held.
func (s *watchStream) nextCreate() *streamWatch {
	for len(s.creating) > 0 && s.creating[0].cancelled {
		s.creating[0] = nil
		s.creating = s.creating[1:]
	}
	if len(s.creating) == 0 {
		return nil
	}
	return s.creating[0]
}

func (s *watchStream) send(req *pb.WatchRequest) {
	s.mu.Lock()
	stream := s.stream
	s.mu.Unlock()
	if stream == nil {
		return
	}
	s.sendMu.Lock()
	err := stream.Send(req)
	s.sendMu.Unlock()
	if err != nil {
		// Recv fails too, and ends the watches.
		s.cancel()
	}
}

// dispatch hands resp to its watch.
func (s *watchStream) dispatch(resp *pb.WatchResponse) {
	var next, cancel *pb.WatchRequest
	reopen := false
	s.mu.Lock()
	switch {
	case resp.Created:
		if len(s.creating) == 0 {
			break // no create is waiting: not a response of this stream's
		}
		w := s.creating[0]
		s.creating[0] = nil
		s.creating = s.creating[1:]
		switch {
		case resp.WatchId == -1 || resp.Canceled:
			reason := resp.CancelReason
			if reason == "" {
				reason = "etcd refused the watch"
			}
			w.endLocked(rpctypes.Error(errors.New(reason)))
			reopen = s.staleToken(resp.CancelReason)
		case w.cancelled:
			cancel = cancelRequest(resp.WatchId)
		default:
			w.id = resp.WatchId
			s.watching[w.id] = w
		}
		if h := s.nextCreate(); h != nil {
			next = h.req
		}
	case resp.WatchId == -1:
		// A progress notification for the whole stream (what a progress
		// request gets): every watch on it is current to its revision.
		for _, w := range s.watching {
			w.pushLocked(resp, false)
		}
	default:
		w := s.watching[resp.WatchId]
		if w == nil {
			break // cancelled: its cancel request is on the way
		}
		if resp.Canceled {
			delete(s.watching, resp.WatchId)
		}
		w.pushLocked(resp, resp.Canceled)
	}
	s.mu.Unlock()
	if reopen {
		// The stream's auth token (taken when it opened, and checked at
		// every create) is no longer good; unary calls log in again on
		// their own. A new stream gets a fresh token: every watch on
		// this one ends and resumes there from its revision.
		s.c.m.Errors.WithLabelValues(backendName, "watch_token_stale").Inc()
		s.cancel()
		return
	}
	if cancel != nil {
		s.send(cancel)
	}
	if next != nil {
		s.send(next)
	}
}

// staleTokenAge is how old a stream must be for a create refused with
// "permission denied" to be taken for an expired token (etcd 3.4 says
// that instead of "invalid auth token") rather than a real denial, which
// a new stream would not cure.
const staleTokenAge = 30 * time.Second

// staleToken reports whether a create was refused because the stream's
// auth token went stale (an unused simple token expires after etcd's
// --auth-token-ttl, 300 s by default).
func (s *watchStream) staleToken(reason string) bool {
	switch reason {
	case rpctypes.ErrGRPCInvalidAuthToken.Error(), rpctypes.ErrGRPCAuthOldRevision.Error():
		return true
	case rpctypes.ErrGRPCPermissionDenied.Error():
		return time.Since(s.opened) > staleTokenAge
	}
	return false
}

// fail ends the stream and every watch on it with err.
func (s *watchStream) fail(err error) {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err = rpctypes.Error(err)
	for _, w := range s.creating {
		w.endLocked(s.err)
	}
	for _, w := range s.watching {
		w.endLocked(s.err)
	}
	s.creating, s.watching = nil, nil
}

// requestProgress asks etcd for a progress notification on the stream, if
// it is open: etcd sends it once every watch on it has caught up.
func (s *watchStream) requestProgress() {
	s.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
}

func cancelRequest(id int64) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}}
}

func (w *streamWatch) pushLocked(resp *pb.WatchResponse, last bool) {
	if w.ended {
		return
	}
	w.queue = append(w.queue, resp)
	w.ended = last
	w.wake()
}

func (w *streamWatch) endLocked(err error) {
	if w.ended {
		return
	}
	w.err, w.ended = err, true
	w.wake()
}

func (w *streamWatch) wake() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// take returns what was queued, in order, and whether nothing more will
// come: then err is why when the stream failed (nil: the last response
// says).
func (w *streamWatch) take() (resps []*pb.WatchResponse, ended bool, err error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	resps, w.queue = w.queue, nil
	return resps, w.ended, w.err
}

// stop ends the watch for its goroutine: etcd is told to cancel it.
func (w *streamWatch) stop() {
	s := w.s
	s.mu.Lock()
	w.cancelled = true
	var cancel *pb.WatchRequest
	if cur, ok := s.watching[w.id]; ok && cur == w {
		delete(s.watching, w.id)
		cancel = cancelRequest(w.id)
	}
	w.ended, w.queue = true, nil
	s.mu.Unlock()
	if cancel != nil {
		s.send(cancel)
	}
}
