package checks

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
)

// Redis is healthy when the server answers PING with PONG (after AUTH when
// a password is set).
type Redis struct {
	Addr     string
	Password string
	name     string
}

// Name implements Check.
func (r *Redis) Name() string { return r.name }

// Check implements Check.
func (r *Redis) Check(ctx context.Context) error {
	c, err := dialCheck(ctx, r.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	if r.Password != "" {
		if err := command(c, rd, "+OK", "AUTH", r.Password); err != nil {
			return fmt.Errorf("AUTH: %w", err)
		}
	}
	return command(c, rd, "+PONG", "PING")
}

// command sends a RESP array command and checks the one-line reply.
func command(c net.Conn, rd *bufio.Reader, want string, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	if line != want {
		if len(line) > 100 {
			line = line[:100]
		}
		return fmt.Errorf("reply %q, want %s", line, want)
	}
	return nil
}
