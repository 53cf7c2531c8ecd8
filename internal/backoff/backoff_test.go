package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelaysGrowCappedAndJittered(t *testing.T) {
	tests := []struct {
		name      string
		base, max time.Duration
		ceilings  []time.Duration // the ceiling of each consecutive delay
	}{
		{"doubles to the cap", 100 * time.Millisecond, time.Second,
			[]time.Duration{100, 200, 400, 800, 1000, 1000}},
		{"max below base is base", time.Second, time.Millisecond,
			[]time.Duration{1000, 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.base, tt.max)
			for i, c := range tt.ceilings {
				ceil := c * time.Millisecond
				d := b.Next()
				if d < ceil/2 || d > ceil {
					t.Fatalf("delay %d = %v, want in [%v, %v]", i, d, ceil/2, ceil)
				}
			}
			b.Reset()
			if d := b.Next(); d > tt.base {
				t.Fatalf("after Reset: %v, want <= %v", d, tt.base)
			}
		})
	}
}

// Two loops that failed at the same moment must not retry at the same
// moment: the whole point of the jitter.
func TestJitterSpreadsAFleet(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		b := New(time.Second, time.Minute)
		seen[b.Next()] = true
	}
	if len(seen) < 90 {
		t.Fatalf("100 fresh backoffs gave only %d distinct first delays", len(seen))
	}
}

func TestFailingAndWait(t *testing.T) {
	b := New(time.Millisecond, 2*time.Millisecond)
	if b.Failing() {
		t.Fatal("fresh backoff reports failing")
	}
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !b.Failing() {
		t.Fatal("after a delay: not failing")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New(time.Hour, time.Hour).Wait(ctx); err == nil {
		t.Fatal("Wait on a cancelled context returned nil")
	}
}
