package synapse

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// Acks and the catalog: what this synapse tells synctl through the
// overrides' registry.

// ackState is what an ack says: the override revision applied, the
// servers set aside, and the removals held back.
type ackState struct {
	rev         int64
	quarantined []string
	held        []string
}

// ackHeld names the held removals for an ack ("service/server"), bounded.
func ackHeld(ps []PanicStatus) []string {
	var out []string
	for _, p := range ps {
		for _, h := range p.Held {
			if len(out) == registry.MaxAckQuarantined {
				return out
			}
			out = append(out, p.Service+"/"+h)
		}
	}
	return out
}

// ackQuarantined names the quarantined servers for an ack, bounded.
func ackQuarantined(qs []generators.Quarantined) []string {
	var out []string
	for _, q := range qs {
		if len(out) == registry.MaxAckQuarantined {
			break
		}
		line := q.Service + "/" + q.Server + ": " + q.Reason
		if len(line) > 500 {
			line = line[:500]
		}
		out = append(out, strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, line))
	}
	slices.Sort(out)
	return out
}

// ackLoop writes the latest ack state, one at a time. An ack names this
// synapse's services (name → path, for synctl to find the backends) only
// while its catalog, which holds the same map, is not known to be in the
// registry as written (keepCatalog); otherwise it leaves them to the
// catalog. At 1000 services the map is ~40 KB of JSON, and a fleet of N
// synapses wrote N × 40 KB to the registry for every override change
// (each an fsync'd write the registry replicates). catalogChanged (the
// catalog written, or found lost) rewrites the last ack accordingly.
func (s *Synapse) ackLoop(ctx context.Context, acks <-chan ackState, catalogChanged <-chan struct{}) {
	services := s.ackServices() // fixed for this pipeline's config
	tooMany := false            // to name in an ack (see below)
	retry := backoff.New(250*time.Millisecond, 30*time.Second)
	var st ackState
	written := false // an ack saying st is in the registry
	for {
		select {
		case <-ctx.Done():
			return
		case st = <-acks:
		case <-catalogChanged:
			if !written {
				continue // the first ack will say it
			}
		}
		retry.Reset()
		for ctx.Err() == nil {
			a := registry.Ack{ID: s.cfg.ID, Revision: st.rev, At: time.Now().UTC(), Quarantined: st.quarantined, Held: st.held,
				ServicesInCatalog: tooMany || s.catalogCurrent.Load()}
			if !a.ServicesInCatalog {
				a.Services = services
			}
			err := s.acks.PutAck(ctx, a)
			if errors.Is(err, registry.ErrTooLarge) && !a.ServicesInCatalog {
				// A map too large for an ack (some 12,000 services) is
				// too large for the catalog too: the acks leave the
				// services to a catalog that is not there, and synctl
				// shows them as unknown rather than take this synapse
				// for dead.
				s.log.Error("too many services to name in an ack or a catalog: synctl will show this synapse's services as unknown", "services", len(services), "err", err)
				tooMany = true
				continue
			}
			if err == nil {
				s.m.Acks.WithLabelValues("ok").Inc()
				written = true
				break
			}
			s.m.Acks.WithLabelValues("error").Inc()
			wait := retry.Next()
			s.log.Warn("ack failed; retrying", "revision", st.rev, "err", err, "in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			case st = <-acks: // a newer one supersedes it
			}
		}
	}
}

// ackServices lists the services watched in the overrides' registry, with
// their paths, for synctl to find their backends.
func (s *Synapse) ackServices() map[string]string {
	o := s.cfg.Overrides
	out := map[string]string{}
	for name, svc := range s.cfg.Services {
		method, hosts, path, ok := svc.Discovery.RegistryPath()
		if ok && method == o.Method && slices.Equal(sortedCopy(hosts), sortedCopy(o.Hosts)) {
			out[name] = path
		}
	}
	return out
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	sort.Strings(c)
	return c
}

func (a ackState) equal(b ackState) bool {
	return a.rev == b.rev && slices.Equal(a.quarantined, b.quarantined) && slices.Equal(a.held, b.held)
}
