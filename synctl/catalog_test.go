package synctl

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/zookeeper"
)

// A live synapse's ack vouches for its catalog by digest; synctl takes a
// service's path from what live synapses vouch for over the catalogs dead
// synapses left (nothing removes them), and never from a catalog a live
// synapse's ack does not vouch for (any synapse may write a catalog under
// any name; an ack is ephemeral and checked against its owner).
func TestServicePathsComeFromWhatLiveSynapsesVouchFor(t *testing.T) {
	zks := testserver.StartZooKeeper(t)
	reg, err := zookeeper.New(zookeeper.Config{Servers: zks.Servers(), Metrics: registry.NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	ctx := context.Background()
	now := time.Now().UTC()
	catalog := func(id, path string) map[string]string {
		t.Helper()
		services := map[string]string{"web": path}
		if err := reg.PutCatalog(ctx, registry.Catalog{ID: id, At: now, Services: services}); err != nil {
			t.Fatal(err)
		}
		return services
	}
	// A synapse retired before web moved, and one live at its new path
	// (its id sorts first: the dead one's catalog is read after it).
	catalog("synapse-z-retired", "/services/web-old")
	live := catalog("synapse-a", "/services/web")
	if err := reg.PutAck(ctx, registry.Ack{ID: "synapse-a", At: now, ServicesDigest: registry.ServicesDigest(live)}); err != nil {
		t.Fatal(err)
	}
	c := &common{opTimeout: 5 * time.Second}
	fl, err := readFleet(ctx, reg, c, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := fl.services["web"]; got != "/services/web" || len(fl.unvouched) != 0 {
		t.Errorf("web at %q (unvouched %v), want the live synapse's /services/web", got, fl.unvouched)
	}

	// Someone rewrites the live synapse's catalog: its ack does not vouch
	// for that, so it is not taken, and status says so.
	catalog("synapse-a", "/services/elsewhere")
	if fl, err = readFleet(ctx, reg, c, now); err != nil {
		t.Fatal(err)
	}
	if got := fl.services["web"]; got == "/services/elsewhere" || !slices.Equal(fl.unvouched, []string{"synapse-a"}) {
		t.Errorf("with a catalog its ack does not vouch for: web at %q, unvouched %v", got, fl.unvouched)
	}
	rep, err := buildStatus(ctx, reg, c, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printStatus(&out, rep, now, true)
	if !strings.Contains(out.String(), "synapse-a CATALOG MISSING OR CHANGED") {
		t.Errorf("status does not name the synapse whose catalog is not vouched for:\n%s", out.String())
	}

	// An ack of an older synapse carries the services itself: taken as
	// before.
	if err := reg.PutAck(ctx, registry.Ack{ID: "synapse-a", At: now, Services: map[string]string{"web": "/services/web"}}); err != nil {
		t.Fatal(err)
	}
	if fl, err = readFleet(ctx, reg, c, now); err != nil {
		t.Fatal(err)
	}
	if got := fl.services["web"]; got != "/services/web" || len(fl.unvouched) != 0 {
		t.Errorf("with the services in the ack: web at %q (unvouched %v)", got, fl.unvouched)
	}
}
