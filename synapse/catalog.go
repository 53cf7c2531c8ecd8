package synapse

import (
	"context"
	"time"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// keepCatalog writes this synapse's persistent catalog (the services it
// serves from the overrides' registry, with their paths; an empty one when
// none) so synctl finds their backends even while no synapse is connected,
// and keeps it there. Every registry.CatalogCheck (jittered down to half)
// it reads the record's revision, no data: at 10,000 synapses ~45 small
// reads a second. When the catalog is missing (deleted by hand) or was
// rewritten by another writer (a second synapse with this id), it writes
// it again. It is written at start and on those findings only, never on a
// timer: 40 KB rewritten by every synapse of a large fleet would grow the
// registry's log for nothing.
//
// While the catalog is not known to be there as written, catalogCurrent
// is false and the acks carry the services themselves (ackLoop); writing
// the catalog, and finding it lost, send on changed so the last ack is
// rewritten without them, or with them.
func (s *Synapse) keepCatalog(ctx context.Context, changed chan<- struct{}) {
	cat := registry.Catalog{ID: s.cfg.ID, Services: s.ackServices()}
	retry := backoff.New(time.Second, time.Minute)
	check := backoff.New(s.catalogCheck, s.catalogCheck) // jitter only: spread a fleet's checks
	var written int64                                    // revision of our last write; 0: none
	failed := 0                                          // checks in a row that could not tell
	for ctx.Err() == nil {
		if written == 0 {
			cat.At = time.Now().UTC()
			rev, err := s.catalog.PutCatalog(ctx, cat)
			if err != nil {
				s.m.CatalogWrites.WithLabelValues("error").Inc()
				s.log.Warn("catalog not written; retrying (acks carry the services until it is)", "err", err)
				retry.Wait(ctx)
				continue
			}
			s.m.CatalogWrites.WithLabelValues("ok").Inc()
			retry.Reset()
			written = rev
			s.catalogCurrent.Store(true)
			notify(changed)
		}
		if check.Wait(ctx) != nil {
			return
		}
		rev, ok, err := s.catalog.CatalogRevision(ctx, s.cfg.ID)
		switch {
		case err != nil:
			// Cannot tell (the registry is away): what was written stays
			// believed, as the acks and registrations are. Said when it
			// keeps failing (a permission taken away, say).
			s.m.CatalogChecks.WithLabelValues("error").Inc()
			if failed++; failed == 3 {
				s.log.Warn("catalog checks keep failing", "id", s.cfg.ID, "err", err, "checks", failed)
			}
		case !ok || rev != written:
			s.m.CatalogChecks.WithLabelValues("lost").Inc()
			s.log.Warn("catalog missing or rewritten by another writer (two synapses with this id?); writing it again", "id", s.cfg.ID, "found", ok, "revision", rev, "written", written)
			s.catalogCurrent.Store(false)
			notify(changed)
			written, failed = 0, 0
		default:
			s.m.CatalogChecks.WithLabelValues("ok").Inc()
			failed = 0
		}
	}
}

// notify sends on a one-slot channel unless a send is pending already.
func notify(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
