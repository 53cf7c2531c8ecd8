package synctl

import (
	"maps"
	"slices"
	"testing"

	"github.com/syncstack/syncstack/registry"
)

// Where two sources name a service at different paths, the more
// authoritative one wins: a live synapse's catalog over a dead one's (which
// may name a path the service has left), a live ack that names services
// over catalogs, synctl's config over all.
func TestKnownServicesPrecedence(t *testing.T) {
	cat := func(id string, services map[string]string) registry.Catalog {
		return registry.Catalog{ID: id, Services: services}
	}
	ack := func(id string, services map[string]string) registry.Ack {
		return registry.Ack{ID: id, Services: services}
	}
	deferring := func(id string) registry.Ack { return registry.Ack{ID: id, ServicesInCatalog: true} }
	for _, tc := range []struct {
		name     string
		acks     []registry.Ack
		catalogs []registry.Catalog
		config   map[string]string
		want     map[string]string
		unknown  []string
	}{
		{
			name: "a live synapse's catalog over a dead one's, whichever sorts first",
			acks: []registry.Ack{deferring("b-live")},
			catalogs: []registry.Catalog{
				cat("a-dead", map[string]string{"web": "/old/web", "legacy": "/old/legacy"}),
				cat("b-live", map[string]string{"web": "/services/web"}),
				cat("c-dead", map[string]string{"web": "/older/web"}),
			},
			want: map[string]string{"web": "/services/web", "legacy": "/old/legacy"},
		},
		{
			name:     "an ack naming its services over every catalog",
			acks:     []registry.Ack{ack("a", map[string]string{"web": "/acked/web"}), deferring("b")},
			catalogs: []registry.Catalog{cat("b", map[string]string{"web": "/services/web", "api": "/services/api"})},
			want:     map[string]string{"web": "/acked/web", "api": "/services/api"},
		},
		{
			name:     "the config over all",
			acks:     []registry.Ack{ack("a", map[string]string{"web": "/acked/web"})},
			catalogs: []registry.Catalog{cat("a", map[string]string{"web": "/services/web"})},
			config:   map[string]string{"web": "/config/web"},
			want:     map[string]string{"web": "/config/web"},
		},
		{
			name: "a live synapse that leaves its services to a catalog it has not is unknown",
			acks: []registry.Ack{
				deferring("a"), ack("b", map[string]string{"web": "/services/web"}), deferring("c"),
				ack("e-serves-none", nil), // an older synapse serving none from this registry: no key, no catalog
			},
			catalogs: []registry.Catalog{cat("c", map[string]string{}), cat("d-dead", map[string]string{"web": "/old/web"})},
			want:     map[string]string{"web": "/services/web"},
			unknown:  []string{"a"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fleet{acks: tc.acks, catalogs: tc.catalogs}
			if got := f.knownServices(tc.config); !maps.Equal(got, tc.want) {
				t.Errorf("knownServices = %v, want %v", got, tc.want)
			}
			if got := f.unknown(); !slices.Equal(got, tc.unknown) {
				t.Errorf("unknown = %v, want %v", got, tc.unknown)
			}
		})
	}
}
