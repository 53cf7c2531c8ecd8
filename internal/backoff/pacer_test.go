package backoff

import (
	"testing"
	"time"
)

// Corrections of a record another writer keeps changing: the first two at
// once, then spaced out by a growing backoff; after a quiet spell, at once
// again.
func TestPacer(t *testing.T) {
	p := NewPacer(100*time.Millisecond, 5*time.Second, 5*time.Second)
	t0 := time.Unix(1000, 0)
	for i, tc := range []struct {
		at       time.Duration // since t0
		min, max time.Duration // the hold
	}{
		{0, 0, 0},                     // first: now
		{10 * time.Millisecond, 0, 0}, // second: now, and the next one waits
		{20 * time.Millisecond, 1, 100 * time.Millisecond},
		{200 * time.Millisecond, 0, 0},                      // its hold is over
		{210 * time.Millisecond, 1, 200 * time.Millisecond}, // growing
		{10 * time.Second, 0, 0},                            // after a quiet spell: at once
		{10*time.Second + time.Millisecond, 0, 0},           // and the backoff starts over
	} {
		got := p.Hold(t0.Add(tc.at))
		if got < tc.min || got > tc.max {
			t.Errorf("step %d at +%v: hold %v, want %v..%v", i, tc.at, got, tc.min, tc.max)
		}
	}
}
