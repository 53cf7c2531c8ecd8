// Package generators turns synapse's desired state into the world: HAProxy
// (generators/haproxy) or files (generators/fileoutput). A generator knows
// nothing of where the state came from.
package generators

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// Generator makes the world match the desired state. Apply is idempotent:
// calling it twice with the same state changes nothing the second time.
type Generator interface {
	Name() string
	Apply(ctx context.Context, desired State) error
}

// Retrier is implemented by a generator that has unfinished work no state
// change will trigger (a removed server waiting for its connections to
// end, say): RetryAt is when it wants Apply called again with the same
// state, the zero time when it has nothing left to do.
type Retrier interface {
	RetryAt() time.Time
}

// DeferredError says a generator has work due that it holds back (a
// rate-limited reload): Apply again at (or after) At. What could be done
// at once (runtime changes) was done.
type DeferredError struct {
	At     time.Time
	Reason string // what is held back, for the log
}

func (e *DeferredError) Error() string {
	return fmt.Sprintf("%s deferred until %s", e.Reason, e.At.Format(time.RFC3339Nano))
}

// State is the whole desired state: every configured service with the
// backends it should have now.
type State struct {
	Services Services `json:"services"`
}

// Service is one service's backends in registration order: the lowest
// registry.Instance.Seq first, then those without one (static, file and
// dns records, default servers), ties by server name. It is the order
// backend_order no_shuffle writes, as Airbnb's watchers hand it over; a
// generator that orders servers otherwise (asc, desc, the seeded shuffle)
// sorts them itself.
type Service struct {
	Backends []Backend `json:"backends"`
	// Unknown says nothing is known yet (its watcher has not answered
	// since start and there is no cache): generators leave what they
	// have for it untouched rather than empty it.
	Unknown bool `json:"unknown,omitempty"`
	// Cached says the backends come from synapse's state cache, not (yet)
	// from its watcher. A generator attached to a HAProxy that kept
	// running treats them as unknown: what HAProxy has is newer than any
	// cache. One that had to start HAProxy uses them.
	Cached bool `json:"cached,omitempty"`
}

// Backend is one server as HAProxy should have it: the registered instance
// with the overrides applied.
type Backend struct {
	registry.Instance
	// State is ready, drain or maint.
	State registry.OverrideState `json:"state"`
}

// ServerName is the backend's stable HAProxy server name: name_host:port,
// or host:port for a record without a name.
func (b Backend) ServerName() string {
	addr := b.Host + ":" + strconv.Itoa(b.Port) // no brackets: HAProxy names allow ':'
	if b.Name == "" {
		return addr
	}
	return b.Name + "_" + addr
}

// Equal reports whether two states are the same.
func (s State) Equal(o State) bool { return s.Services.Equal(o.Services) }

// Equal reports whether two services have the same backends.
func (s Service) Equal(o Service) bool {
	if s.Unknown != o.Unknown || s.Cached != o.Cached || len(s.Backends) != len(o.Backends) {
		return false
	}
	if len(s.Backends) == 0 || &s.Backends[0] == &o.Backends[0] {
		return true // the same slice: an unchanged service reused as it was
	}
	return slices.EqualFunc(s.Backends, o.Backends, func(a, b Backend) bool {
		return a.State == b.State && a.Instance.Equal(b.Instance)
	})
}

// SortBackends orders backends by server name.
func SortBackends(b []Backend) {
	slices.SortFunc(b, func(x, y Backend) int { return strings.Compare(x.ServerName(), y.ServerName()) })
}

// Quarantined is one server a generator set aside because what it was
// asked to do with it failed (HAProxy refused the server, its host name
// does not resolve): skipped, while every other server keeps converging.
// It is tried again when its record changes, or at RetryAt.
type Quarantined struct {
	Service string    `json:"service"`
	Server  string    `json:"server"`
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since"`
	RetryAt time.Time `json:"retry_at"`
}

// Quarantiner is implemented by a generator that quarantines servers; a
// quarantined server is not an apply error.
type Quarantiner interface {
	Quarantined() []Quarantined
}
