package registry

import (
	"context"
	"slices"
	"strings"
)

// PutCatalog implements CatalogWriter: the persistent record
// CatalogDir()/<c.ID>, created or replaced; it outlives the session.
func (r Records) PutCatalog(ctx context.Context, c Catalog) error {
	data, err := c.Encode()
	if err != nil {
		return err
	}
	_, err = r.Store.Put(ctx, r.CatalogDir(), c.ID, data)
	return err
}

// Catalogs implements CatalogReader, sorted by ID.
func (r Records) Catalogs(ctx context.Context) ([]Catalog, error) {
	dir := r.CatalogDir()
	l, err := r.Store.List(ctx, dir, ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]Catalog, 0, len(l.Records))
	for _, rec := range l.Records {
		c, err := DecodeCatalog(rec.Data)
		if err != nil {
			r.Store.Skip(dir, rec.Name, err)
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Catalog) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
