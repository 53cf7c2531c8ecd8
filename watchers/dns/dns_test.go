package dns

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"sync"
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

// nameserver is a real DNS server on loopback UDP that answers A queries
// for a name with its address, or NXDOMAIN when it has none, and counts
// the NXDOMAIN answers it sent.
type nameserver struct {
	conn  *net.UDPConn
	mu    sync.Mutex
	addrs map[string]net.IP // by name, as asked ("web.test")
	nx    int
	kick  chan struct{} // signalled after every NXDOMAIN answer
}

func startNameserver(t *testing.T) *nameserver {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ns := &nameserver{conn: conn, addrs: map[string]net.IP{}, kick: make(chan struct{}, 1)}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if resp := ns.answer(buf[:n]); resp != nil {
				conn.WriteToUDP(resp, from)
			}
		}
	}()
	return ns
}

// set gives name addr (nil: NXDOMAIN).
func (ns *nameserver) set(name string, addr net.IP) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.addrs[name] = addr
}

// answer builds the response to query q: its question echoed, then one A
// record (a name pointer to the question) or none.
func (ns *nameserver) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	end := 12
	var labels []string
	for end < len(q) && q[end] != 0 {
		if l := int(q[end]); end+1+l <= len(q) {
			labels = append(labels, string(q[end+1:end+1+l]))
		}
		end += int(q[end]) + 1
	}
	end += 5 // the root label, type, class
	if end > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[end-4:])
	ns.mu.Lock()
	addr := ns.addrs[strings.ToLower(strings.Join(labels, "."))]
	if addr == nil {
		ns.nx++
	}
	ns.mu.Unlock()
	resp := slices.Clone(q[:end])
	flags := uint16(0x8000 | 0x0080)                 // a response, recursion available
	flags |= binary.BigEndian.Uint16(q[2:]) & 0x0100 // recursion desired, as asked
	var answers uint16
	switch {
	case addr == nil:
		flags |= 3 // NXDOMAIN
	case qtype == 1: // A
		answers = 1
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4)
		resp = append(resp, addr.To4()...)
	}
	binary.BigEndian.PutUint16(resp[2:], flags)
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], answers)
	binary.BigEndian.PutUint16(resp[8:], 0)
	binary.BigEndian.PutUint16(resp[10:], 0)
	if addr == nil {
		select {
		case ns.kick <- struct{}{}:
		default:
		}
	}
	return resp
}

// waitNX waits until the server has answered n more NXDOMAIN queries than
// from, failing the test on anything sent on out meanwhile.
func (ns *nameserver) waitNX(t *testing.T, from, n int, out <-chan []registry.Instance) int {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ns.mu.Lock()
		got := ns.nx
		ns.mu.Unlock()
		if got >= from+n {
			return got
		}
		select {
		case s := <-out:
			t.Fatalf("a failed lookup sent %v", s)
		case <-ns.kick:
		case <-deadline:
			t.Fatalf("%d NXDOMAIN answers, want %d: the lookups hang or were never made", got-from, n)
		}
	}
}

// A name that does not resolve sends nothing: at first (no set is known,
// so none is sent, not an empty one), and later (the last answer stands).
// The test waits until the watcher has had its failures answered, round
// after round (a round's queries go out only after the last round's
// answers were handled), so a resolver that hangs fails it instead of
// passing for want of an answer.
func TestFailedLookupSendsNothing(t *testing.T) {
	ns := startNameserver(t)
	w := &Watcher{
		Servers:  []registry.Instance{{Host: "web.test.", Port: 80}},
		Interval: 20 * time.Millisecond,
		Resolver: NewResolver(ns.conn.LocalAddr().String()),
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []registry.Instance, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	next := func(want string) {
		t.Helper()
		select {
		case s := <-out:
			if len(s) != 1 || s[0].Address() != want {
				t.Fatalf("sent %v, want %s", s, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no set, want %s", want)
		}
	}
	// Three rounds of A and AAAA, each answered NXDOMAIN.
	nx := ns.waitNX(t, 0, 6, out)
	ns.set("web.test", net.IPv4(127, 0, 0, 1))
	next("127.0.0.1:80")
	ns.set("web.test", nil)
	ns.waitNX(t, nx, 6, out)
	ns.set("web.test", net.IPv4(127, 0, 0, 2))
	next("127.0.0.2:80")
}

// One name failing keeps its last answer while the others' changes are
// sent.
func TestFailedNameKeepsItsLastAnswer(t *testing.T) {
	ns := startNameserver(t)
	ns.set("a.test", net.IPv4(127, 0, 0, 1))
	ns.set("b.test", net.IPv4(127, 0, 0, 2))
	w := &Watcher{
		Servers:  []registry.Instance{{Host: "a.test.", Port: 80}, {Host: "b.test.", Port: 80}},
		Interval: 20 * time.Millisecond,
		Resolver: NewResolver(ns.conn.LocalAddr().String()),
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan []registry.Instance, 10)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, out) }()
	t.Cleanup(func() { cancel(); <-done })
	next := func(want ...string) {
		t.Helper()
		select {
		case s := <-out:
			var got []string
			for _, in := range s {
				got = append(got, in.Address())
			}
			if !slices.Equal(got, want) {
				t.Fatalf("sent %v, want %v", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no set, want %v", want)
		}
	}
	next("127.0.0.1:80", "127.0.0.2:80")
	ns.set("a.test", nil)
	ns.set("b.test", net.IPv4(127, 0, 0, 3))
	// a.test's answer stands; b.test's new one arrives.
	next("127.0.0.1:80", "127.0.0.3:80")
}
