package etcd

import (
	"context"
	"sync"
)

// mailbox hands the newest value to a consumer without ever blocking the
// producer: the watch loop keeps draining etcd's watch stream while the
// consumer is busy, so etcd never has to park the watcher as a slow one
// (which would delay its events by whole sync rounds), and a burst of
// events becomes one delivery of the final set.
type mailbox[T any] struct {
	mu      sync.Mutex
	val     T
	full    bool
	ready   chan struct{}
	stopped chan struct{}
}

func newMailbox[T any](ctx context.Context, out chan<- T) *mailbox[T] {
	m := &mailbox[T]{ready: make(chan struct{}, 1), stopped: make(chan struct{})}
	go func() {
		defer close(m.stopped)
		for {
			select {
			case <-ctx.Done():
				return
			case <-m.ready:
			}
			m.mu.Lock()
			v, full := m.val, m.full
			var zero T
			m.val, m.full = zero, false
			m.mu.Unlock()
			if !full {
				continue
			}
			select {
			case out <- v:
			case <-ctx.Done():
				return
			}
		}
	}()
	return m
}

// put replaces whatever is waiting with v.
func (m *mailbox[T]) put(v T) {
	m.mu.Lock()
	m.val, m.full = v, true
	m.mu.Unlock()
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// wait returns when the sender has stopped (after ctx ended).
func (m *mailbox[T]) wait() { <-m.stopped }
