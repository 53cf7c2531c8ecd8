package testserver

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

var (
	portsMu sync.Mutex
	taken   = map[int]bool{}
)

// FreePort returns a loopback TCP port below 32768 (the kernel's ephemeral
// range starts there, so a server we start later cannot lose its port to an
// outgoing connection) that was free a moment ago and that this process has
// not handed out before.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 10000 + rand.IntN(22000)
		if taken[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		taken[p] = true
		return p
	}
	t.Fatal("testserver: no free loopback port below 32768")
	return 0
}
