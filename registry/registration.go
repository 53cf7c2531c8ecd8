package registry

import (
	"context"
	"errors"
	"fmt"
)

// Keeper keeps one record registered: the part of a Registration each
// backend does its own way (ZooKeeper an ephemeral node re-created in
// every new session, etcd a key under a lease replaced when it is lost).
type Keeper interface {
	// Key is where the record lives now.
	Key() string
	// Write replaces the record's data and returns once the registry has
	// it (or ctx ends; the keeper then goes on trying).
	Write(ctx context.Context, data []byte) error
	// Stop ends the keeping: the keeper removes the record, retrying until
	// the registry confirms it or the backend is closed.
	Stop()
	// Stopped is closed once the removal is confirmed (or the backend
	// closed).
	Stopped() <-chan struct{}
	// RemoveErr is the last removal attempt's error: nil once confirmed.
	RemoveErr() error
}

// Kept is the Registration of a Keeper; Backend names the registry in
// errors ("zookeeper", "etcd").
type Kept struct {
	Backend string
	Keeper  Keeper
}

// Key implements Registration.
func (r Kept) Key() string { return r.Keeper.Key() }

// Update implements Registration.
func (r Kept) Update(ctx context.Context, inst Instance) error {
	data, err := inst.Encode()
	if err != nil {
		return err
	}
	return r.Keeper.Write(ctx, data)
}

// Deregister implements Registration: it stops the keeper and waits until
// the removal is confirmed. If ctx ends first it returns an error, and the
// keeper keeps trying in the background; calling Deregister again waits
// again.
func (r Kept) Deregister(ctx context.Context) error {
	r.Keeper.Stop()
	select {
	case <-r.Keeper.Stopped():
		return r.Keeper.RemoveErr()
	case <-ctx.Done():
		last := r.Keeper.RemoveErr()
		if last == nil {
			last = errors.New("no answer yet")
		}
		return fmt.Errorf("%s: deregister %s: removal not confirmed yet, retrying (last: %v): %w", r.Backend, r.Key(), last, ctx.Err())
	}
}
