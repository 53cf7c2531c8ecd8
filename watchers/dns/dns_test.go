package dns

import (
	"context"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// localhost and literal addresses resolve without a network.
func TestResolvesNames(t *testing.T) {
	w := &Watcher{Servers: []registry.Instance{{Host: "localhost", Port: 8080, Name: "local"}, {Host: "127.0.0.5", Port: 81}}, Interval: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan []registry.Instance, 1)
	go w.Run(ctx, out)
	select {
	case s := <-out:
		found := map[string]bool{}
		for _, in := range s {
			found[in.Address()] = true
		}
		if !found["127.0.0.1:8080"] || !found["127.0.0.5:81"] {
			t.Errorf("resolved %v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no set")
	}
}

// A name that does not resolve sends nothing (the last set stands).
func TestFailedLookupSendsNothing(t *testing.T) {
	w := &Watcher{Servers: []registry.Instance{{Host: "no-such-host.invalid", Port: 80}}, Interval: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	out := make(chan []registry.Instance, 1)
	w.Run(ctx, out)
	select {
	case s := <-out:
		t.Fatalf("sent %v", s)
	default:
	}
}
