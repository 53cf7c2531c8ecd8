package poll

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

type result struct {
	set []registry.Instance
	err error
}

// start runs Run with a Read that returns, one per call, what the test
// hands it; out is unbuffered, so whatever Run sends is what the test
// receives next.
func start(t *testing.T, interval time.Duration) (reads chan<- result, out <-chan []registry.Instance) {
	t.Helper()
	r := make(chan result)
	o := make(chan []registry.Instance)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, o, Options{Interval: interval, Read: func(ctx context.Context) ([]registry.Instance, error) {
			select {
			case res := <-r:
				return res.set, res.err
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	})
	return r, o
}

func set(ports ...int) []registry.Instance {
	s := []registry.Instance{}
	for _, p := range ports {
		s = append(s, registry.Instance{Host: "10.0.0.1", Port: p})
	}
	return s
}

func ports(s []registry.Instance) []int {
	out := []int{}
	for _, in := range s {
		out = append(out, in.Port)
	}
	return out
}

// Each step hands Read one result; want is the set Run must send next,
// and a step with no want sends nothing: the next set received proves it.
func TestRun(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		steps []result
		want  [][]int // the sets sent, in order
	}{
		{"the first read is sent, even empty", []result{{set: nil}}, [][]int{{}}},
		{"an unchanged set is not sent again", []result{{set: set(1)}, {set: set(1)}, {set: set(2)}}, [][]int{{1}, {2}}},
		{"order and duplicates are no change", []result{{set: set(1, 2)}, {set: set(2, 1, 2)}, {set: set(3)}}, [][]int{{1, 2}, {3}}},
		{"a failed first read sends nothing", []result{{err: boom}, {err: boom}, {set: set(1)}}, [][]int{{1}}},
		{"a failed read sends nothing, the last set stands", []result{{set: set(1)}, {err: boom}, {set: set(1)}, {set: set(2)}}, [][]int{{1}, {2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads, out := start(t, time.Millisecond)
			var got [][]int
			go func() {
				for _, s := range tc.steps {
					select {
					case reads <- s:
					case <-t.Context().Done():
						return
					}
				}
			}()
			for range tc.want {
				select {
				case s := <-out:
					got = append(got, ports(s))
				case <-time.After(5 * time.Second):
					t.Fatalf("sent %v, want %v", got, tc.want)
				}
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Fatalf("sent %v, want %v", got, tc.want)
			}
		})
	}
}

// A failed read is retried after the jittered backoff (its first delay
// in [0.5s, 1s]), not after the interval, and not at once.
func TestFailedReadRetriedBeforeInterval(t *testing.T) {
	reads, out := start(t, time.Hour)
	reads <- result{err: errors.New("boom")}
	failed := time.Now()
	select {
	case reads <- result{set: set(1)}:
	case <-time.After(5 * time.Second):
		t.Fatal("no retry within 5s of a failed read (interval 1h)")
	}
	if d := time.Since(failed); d < 400*time.Millisecond {
		t.Errorf("retried after %v: the backoff waits at least 0.5s", d)
	}
	if s := <-out; !slices.Equal(ports(s), []int{1}) {
		t.Errorf("sent %v", s)
	}
}
