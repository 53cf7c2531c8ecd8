package testserver

import (
	"net"
	"testing"
)

// StartTCPAcceptor listens on a free loopback port and accepts (and closes)
// every connection: what a TCP health check needs to pass. It stops in
// t.Cleanup; the port is returned.
func StartTCPAcceptor(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testserver: tcp acceptor: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
