package checks

import (
	"context"
	"net"
)

// TCP is healthy when a connection to Addr opens.
type TCP struct {
	Addr string
	name string
}

// Name implements Check.
func (t *TCP) Name() string { return t.name }

// Check implements Check.
func (t *TCP) Check(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return err
	}
	return c.Close()
}
