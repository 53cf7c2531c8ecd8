// Package backoff is the one retry delay used by every retry loop in
// syncstack: exponential, capped, and jittered, so that a fleet of nerves
// and synapses that lost the registry together does not come back in
// lockstep and stampede it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff hands out retry delays: the n-th consecutive failure waits a
// random time in [d/2, d], where d = Base·2ⁿ capped at Max. The zero value
// is not usable; build one with New. A Backoff is not safe for concurrent
// use: each retry loop owns its own.
type Backoff struct {
	base, max time.Duration
	next      time.Duration // the ceiling of the next delay
}

// New returns a Backoff whose first delay is at most base and whose delays
// never exceed max. base must be positive and max at least base.
func New(base, max time.Duration) *Backoff {
	if base <= 0 {
		panic("backoff: base must be positive")
	}
	if max < base {
		max = base
	}
	return &Backoff{base: base, max: max, next: base}
}

// Next returns the delay before the next attempt and grows the one after.
func (b *Backoff) Next() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Reset starts over after a success.
func (b *Backoff) Reset() { b.next = b.base }

// Failing reports whether the last attempt failed (a delay was handed out
// since the last Reset).
func (b *Backoff) Failing() bool { return b.next != b.base }

// After returns a channel that fires after the next delay: the retry case
// of a select loop.
func (b *Backoff) After() <-chan time.Time { return time.After(b.Next()) }

// Wait sleeps the next delay, or returns ctx's error if ctx ends first.
func (b *Backoff) Wait(ctx context.Context) error {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
