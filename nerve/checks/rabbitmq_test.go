package checks

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
)

// Against Debian's rabbitmq-server: login, declare, publish, get and ack
// succeed with Airbnb's defaults (guest, /, queue nerve) and with a queue
// of its own; a wrong password, an unknown vhost and a port where nothing
// speaks AMQP are unhealthy, each saying why.
func TestRabbitMQ(t *testing.T) {
	r := testserver.StartRabbitMQ(t)
	host, port := hostPort(t, r.Addr)
	// A broker that just started may still be opening its vhost: give the
	// first check a few tries.
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := run(build(t, Config{Type: "rabbitmq", Username: "guest", Password: "guest"}, host, port), 2*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("aliveness check against a live broker: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 3 { // the message of one check never fools the next
		if err := run(build(t, Config{Type: "rabbitmq", Queue: "nerve-own"}, host, port), 2*time.Second); err != nil {
			t.Fatalf("check %d with queue nerve-own: %v", i, err)
		}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"wrong password", Config{Type: "rabbitmq", Username: "guest", Password: "nope"}, `login as "guest"`},
		{"unknown vhost", Config{Type: "rabbitmq", Vhost: "/nowhere"}, `vhost "/nowhere"`},
	} {
		err := run(build(t, tc.cfg, host, port), 2*time.Second)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	// Something that is not AMQP: it answers, then closes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	host, port = hostPort(t, ln.Addr().String())
	if err := run(build(t, Config{Type: "rabbitmq"}, host, port), time.Second); err == nil {
		t.Error("a non-AMQP server: healthy")
	}
}
