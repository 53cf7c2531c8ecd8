package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// PutCatalog implements CatalogWriter: the persistent record
// CatalogDir()/<c.ID>, created or replaced; it outlives the session.
func (r Records) PutCatalog(ctx context.Context, c Catalog) (int64, error) {
	data, err := c.Encode()
	if err != nil {
		return 0, err
	}
	return r.Store.Put(ctx, r.CatalogDir(), c.ID, data)
}

// CatalogRevision implements CatalogWriter.
func (r Records) CatalogRevision(ctx context.Context, id string) (int64, bool, error) {
	return r.Store.Revision(ctx, r.CatalogDir(), id)
}

// Catalogs implements CatalogReader, sorted by ID. A catalog stored under
// another name than its synapse's ID is skipped and counted: synctl takes
// a live synapse's catalog (the one named by its ack's ID) as what it
// serves.
func (r Records) Catalogs(ctx context.Context) ([]Catalog, error) {
	dir := r.CatalogDir()
	l, err := r.Store.List(ctx, dir, ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]Catalog, 0, len(l.Records))
	for _, rec := range l.Records {
		c, err := DecodeCatalog(rec.Data)
		if err == nil && c.ID != rec.Name {
			err = fmt.Errorf("catalog %s: claims to be synapse %q", rec.Name, c.ID)
		}
		if err != nil {
			r.Store.Skip(dir, rec.Name, err)
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Catalog) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
