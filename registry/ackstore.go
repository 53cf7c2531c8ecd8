package registry

import (
	"context"
	"slices"
	"strings"
	"time"
)

// PutAck implements AckWriter: the ephemeral record AcksDir()/<a.ID>,
// which lives and dies with this client's session or lease.
func (r Records) PutAck(ctx context.Context, a Ack) error {
	if a.At.IsZero() {
		a.At = time.Now().UTC()
	}
	data, err := EncodeAck(a)
	if err != nil {
		return err
	}
	return r.Store.Keep(ctx, r.AcksDir(), a.ID, data)
}

// Acks implements AckReader. An ack that could lie (not ephemeral, or
// under another synapse's name: CheckAckLive) is skipped and counted.
func (r Records) Acks(ctx context.Context) ([]Ack, error) {
	dir := r.AcksDir()
	l, err := r.Store.List(ctx, dir, ListOptions{})
	if err != nil {
		return nil, err
	}
	var acks []Ack
	for _, rec := range l.Records {
		a, err := DecodeAck(rec.Data)
		if err == nil {
			err = CheckAckLive(rec.Name, a, rec.Ephemeral)
		}
		if err != nil {
			r.Store.Skip(dir, rec.Name, err)
			continue
		}
		acks = append(acks, a)
	}
	slices.SortFunc(acks, func(a, b Ack) int { return strings.Compare(a.ID, b.ID) })
	return acks, nil
}
