package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Catalog is a synapse's persistent record of the services it serves from
// a registry, with the path each is watched at. Acks live and die with the
// synapse's session; the catalog stays, so synctl finds the backends of a
// host even when no synapse is connected (after a long registry outage, say,
// before their sessions are back).
type Catalog struct {
	ID       string            `json:"id"`
	At       time.Time         `json:"at"`
	Services map[string]string `json:"services"`
}

// CatalogCheck is how often a synapse checks that its catalog is still the
// one it wrote (a revision read of one record, jittered down to half): a
// catalog deleted by hand is back within it.
const CatalogCheck = 5 * time.Minute

// Validate checks the catalog's fields.
func (c Catalog) Validate() error {
	if err := ValidateName(c.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if c.At.IsZero() {
		return errors.New("at: missing")
	}
	for name, path := range c.Services {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("services: %w", err)
		}
		if err := ValidateText(path, 1024); err != nil || !strings.HasPrefix(path, "/") {
			return fmt.Errorf("services.%s: path %q is not valid", name, path)
		}
	}
	return nil
}

// MaxCatalogSize bounds an encoded catalog: room for thousands of services,
// under ZooKeeper's default 1 MB node limit.
const MaxCatalogSize = 512 << 10

// Encode writes the catalog's JSON, refusing one over MaxCatalogSize.
func (c Catalog) Encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return marshalWithin(c, "catalog of "+c.ID, MaxCatalogSize)
}

// DecodeCatalog reads and validates a catalog record.
func DecodeCatalog(data []byte) (Catalog, error) {
	if len(data) > MaxCatalogSize {
		return Catalog{}, fmt.Errorf("catalog is %d bytes, over the %d byte limit", len(data), MaxCatalogSize)
	}
	var c Catalog
	if err := json.Unmarshal(data, &c); err != nil {
		return Catalog{}, fmt.Errorf("catalog: %w", err)
	}
	return c, c.Validate()
}
