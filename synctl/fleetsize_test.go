package synctl

import (
	"bytes"
	"context"
	"fmt"
	"github.com/go-zookeeper/zk"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// At fleet size: 1000 backends, 100 synapses (their acks written by the
// test). --wait shows progress on a terminal, naming the slowest, and is
// quiet otherwise; status leads with summaries and lists only what needs a
// look unless --all.
func TestFleetSize(t *testing.T) {
	if testing.Short() {
		t.Skip("registers 1000 backends")
	}
	zks := testserver.StartZooKeeper(t)
	reg, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range 1000 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			in := registry.Instance{Host: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 8080, Name: fmt.Sprintf("web-%04d", i)}
			if _, err := reg.Register(ctx, "/services/web", in); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = fmt.Sprintf("synapse-%03d", i)
		// As a synapse does: its catalog names its services, and its acks
		// leave them to it.
		if _, err := reg.PutCatalog(ctx, registry.Catalog{ID: ids[i], At: time.Now().UTC(), Services: map[string]string{"web": "/services/web"}}); err != nil {
			t.Fatal(err)
		}
		if err := reg.PutAck(ctx, registry.Ack{ID: ids[i], Revision: 0, ServicesInCatalog: true}); err != nil {
			t.Fatal(err)
		}
	}
	flag := []string{"--zk", zks.Nodes[0].Addr}
	var progress testserver.LockedBuffer // the terminal synctl writes to
	run := func(terminal bool, args ...string) (int, string, string) {
		var out bytes.Buffer
		var errb testserver.LockedBuffer
		stderr := &errb
		if terminal {
			stderr = &progress
		}
		env := Env{Stdout: &out, Stderr: stderr, Getenv: func(string) string { return "" }, Now: time.Now, By: "t", Terminal: terminal}
		code := Main(ctx, append(args, flag...), env)
		return code, out.String(), stderr.String()
	}

	// The fleet applies the drain one synapse at a time, synapse-099 last.
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		var rev int64
		registrytest.Eventually(t, 10*time.Second, "the drain is written", func() bool {
			set, err := reg.Overrides(ctx)
			rev = set.Revision
			return err == nil && len(set.Overrides) == 1
		})
		for i, id := range ids {
			if i == 60 { // the rest only once synctl has shown a part-applied fleet
				registrytest.Eventually(t, 10*time.Second, "progress at 60/100", func() bool {
					return strings.Contains(progress.String(), "applied by 60/100; waiting on synapse-060, synapse-061, synapse-062 and 37 more")
				})
			}
			if err := reg.PutAck(ctx, registry.Ack{ID: id, Revision: rev, ServicesInCatalog: true}); err != nil {
				t.Error(err)
			}
		}
	}()
	code, out, errs := run(true, "drain", "10.1.0.1", "--wait", "--timeout", "20s")
	<-applied
	if code != 0 || !strings.Contains(out, "applied by every live synapse (100)") {
		t.Fatalf("drain --wait: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, "applied by 100/100") || !strings.Contains(errs, "\r\x1b[Kwaiting for revision") {
		t.Errorf("no progress on a terminal:\n%q", errs)
	}
	if strings.Count(errs, "\n") != 1 {
		t.Errorf("progress is not one line kept up to date: %q", errs)
	}
	// Not a terminal, or JSON: quiet.
	if code, _, errs := run(false, "add-to-lb", "10.1.0.1", "--wait", "--timeout", "1s"); code == 0 || errs == "" {
		// nobody acks this revision: it times out, and says who has not applied it
		t.Errorf("add-to-lb nobody applies: exit %d %q", code, errs)
	} else if strings.Contains(errs, "waiting for revision") || !strings.Contains(errs, "not applied by 100: synapse-000, ") {
		t.Errorf("not a terminal: %q", errs)
	}

	// status: summaries first; only what needs a look.
	code, out, _ = run(false, "status")
	if code != 0 || !strings.HasPrefix(out, "web: 1000 backends, 1000 serving\n") {
		t.Fatalf("status: exit %d\n%.500s", code, out)
	}
	if n := strings.Count(out, "\n"); n > 30 {
		t.Errorf("status of 1000 backends and 100 synapses is %d lines:\n%.2000s", n, out)
	}
	if !strings.Contains(out, "1000 serving backends at their registered weight not listed") || !strings.Contains(out, "100 synapses: 0 in sync, 100 BEHIND, 0 DEAD") || !strings.Contains(out, "and 90 more not in sync") {
		t.Errorf("status summary:\n%s", out)
	}
	if _, out, _ = run(false, "status", "--all"); strings.Count(out, "\n") < 1100 {
		t.Errorf("status --all lists %d lines", strings.Count(out, "\n"))
	}
	// A synapse's quarantined servers are always listed.
	if err := reg.PutAck(ctx, registry.Ack{ID: "synapse-007", Revision: 1, ServicesInCatalog: true, Quarantined: []string{"web/bad_10.9.9.9:80: add server refused"}}); err != nil {
		t.Fatal(err)
	}
	if _, out, _ = run(false, "status"); !strings.Contains(out, "synapse-007 QUARANTINED web/bad_10.9.9.9:80: add server refused") {
		t.Errorf("status does not show the quarantined server:\n%s", out)
	}

	// 99 catalogs deleted by hand: status stays short, and counts them.
	conn, _, err := zk.Connect(zks.Servers(), 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	for _, id := range ids[1:] {
		if err := conn.Delete("/syncstack/catalog/"+id, -1); err != nil {
			t.Fatal(err)
		}
	}
	code, out, _ = run(false, "status")
	if code != 0 || !strings.Contains(out, "99 with SERVICES UNKNOWN") || !strings.Contains(out, "synapse-001 SERVICES UNKNOWN") || !strings.Contains(out, "and 89 more with SERVICES UNKNOWN") {
		t.Errorf("status with 99 catalogs gone: exit %d\n%s", code, out)
	}
	if n := strings.Count(out, "\n"); n > 45 {
		t.Errorf("status with 99 catalogs gone is %d lines:\n%.3000s", n, out)
	}
}
