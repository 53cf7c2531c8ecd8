package haproxy

import (
	"testing"
	"time"
	"unsafe"

	"github.com/syncstack/syncstack/generators"
)

// Every apply marks each backend's server name seen. A map assignment
// stores its key again: with the name freshly made (ServerName), the seen
// map would keep a copy of every name of its own (10k servers: 0.3 MB) on
// top of the one byName and byID share. It must hold theirs.
func TestServerIDsShareNames(t *testing.T) {
	ids := newServerIDs(100, nil, nil)
	now := time.Now()
	step := func() []generators.Backend { // fresh strings each time, as an apply builds them
		return []generators.Backend{idRecord("a", 1, 0, 1), idRecord("b", 2, 7, 2), idRecord("c", 3, 0, 3)}
	}
	ids.assign("be", step(), nil, now)
	ids.assign("be", step(), nil, now.Add(time.Second))
	if len(ids.seen["be"]) != 3 {
		t.Fatalf("seen %v", ids.seen["be"])
	}
	for name, at := range ids.seen["be"] {
		if !at.Equal(now.Add(time.Second)) {
			t.Errorf("%s last seen %v, want the second apply", name, at)
		}
		n := ids.byName["be"][name]
		held := ids.byID["be"][n]
		if held != name || unsafe.StringData(held) != unsafe.StringData(name) {
			t.Errorf("%s: the seen map keeps a copy of the name byID holds (id %d)", name, n)
		}
	}
}
