package registry

import (
	"context"
	"fmt"
	"strings"
)

// Store is the small layer each backend provides for the fleet-wide
// records (overrides, acks, catalogs, history), so that their logic
// (validation, encoding, revisions, sorting, skipping bad records) is
// written once, in Records, over both ZooKeeper and etcd.
//
// A record is named by a directory (an absolute path such as
// /syncstack/overrides: a ZooKeeper node, or an etcd key prefix without
// its trailing slash) and a name within it (a child node, or the rest of
// the key). Stores refuse a name that would leave its directory
// (ValidateRecordName). Revisions are the backend's own: ZooKeeper zxids,
// etcd store revisions; a later write always gets a larger one.
type Store interface {
	// Put writes data as the persistent record dir/name, creating it or
	// replacing what is there, and returns the revision of the write.
	Put(ctx context.Context, dir, name string, data []byte) (int64, error)
	// Delete removes dir/name and returns a revision that contains the
	// removal and that List (with ListOptions.Deletions) and Watch report
	// for dir from then on. A missing record is not an error.
	Delete(ctx context.Context, dir, name string) (int64, error)
	// Revision returns the revision of dir/name's last write (Put's
	// answer for it) without reading its data; ok is false when the
	// record is missing.
	Revision(ctx context.Context, dir, name string) (rev int64, ok bool, err error)
	// List reads every record of dir once, sorted by name. A missing
	// directory is empty.
	List(ctx context.Context, dir string, opts ListOptions) (Listing, error)
	// Append adds a persistent record to dir under a name that sorts
	// after every earlier one, then removes the oldest beyond keep.
	Append(ctx context.Context, dir string, data []byte, keep int) error
	// Keep writes dir/name as an ephemeral record: it lives as long as
	// the client's session or lease, and is written again at once when
	// a new one replaces it, or when somebody deletes or rewrites it.
	// The first call returns after the first write; a later call for
	// the same record updates its data.
	Keep(ctx context.Context, dir, name string, data []byte) error
	// Watch sends a snapshot of dir (every record decode accepts), then
	// a new one after every change, until ctx ends. decode runs once per
	// record version; a record it refuses is left out, counted and
	// logged as Skip does. A lost connection never yields a smaller
	// snapshot. Delivery may skip intermediate snapshots (the latest
	// wins) but never the last one.
	Watch(ctx context.Context, dir string, decode Decoder, out chan<- Snapshot) error
	// Skip counts and logs a record of dir that failed to decode.
	Skip(dir, name string, err error)
}

// ListOptions tune Store.List.
type ListOptions struct {
	// Newest keeps only the last n records by name; 0 keeps all.
	Newest int
	// Deletions makes Listing.Rev also cover the records deleted from
	// dir (etcd reads the marker Delete leaves for it; ZooKeeper's
	// directory carries it anyway).
	Deletions bool
}

// Record is one stored record.
type Record struct {
	Name string
	Data []byte
	// Rev is the revision of the record's last write.
	Rev int64
	// Ephemeral: bound to a session or lease (Keep wrote it), not a
	// record that outlives its writer.
	Ephemeral bool
}

// Listing is a directory as List read it.
type Listing struct {
	Records []Record
	// Rev is the revision of the latest change to dir that the store can
	// tell: the largest record revision, and with ListOptions.Deletions
	// the latest removal.
	Rev int64
}

// Decoder turns a record into the value a watch delivers; an error
// drops the record (counted as skipped).
type Decoder func(name string, data []byte) (any, error)

// Snapshot is what a watch of a directory delivers.
type Snapshot struct {
	// Rev orders snapshots: a later change gives a larger one.
	Rev int64
	// Values are the decoded records, in no particular order.
	Values []any
}

// ValidateRecordName refuses a record name that would leave its directory
// or that a ZooKeeper path or etcd key cannot carry.
func ValidateRecordName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00\n#") {
		return fmt.Errorf("record name %q is not valid", name)
	}
	return nil
}

// Records implements the fleet-wide roles (Overrides, AckWriter,
// AckReader, CatalogWriter, CatalogReader, History) over a Store, in the
// layout both backends share:
//
//	Root/overrides/<override key>   persistent, written by synctl
//	Root/acks/<synapse id>          ephemeral, written by each synapse
//	Root/catalog/<synapse id>       persistent, written by each synapse
//	Root/history/<ordered name>     persistent, appended by synctl
type Records struct {
	Store Store
	// Root is the backend's Root (/syncstack by default).
	Root string
}

// The directories of Records, under Root.
func (r Records) OverridesDir() string { return r.Root + "/overrides" }
func (r Records) AcksDir() string      { return r.Root + "/acks" }
func (r Records) CatalogDir() string   { return r.Root + "/catalog" }
func (r Records) HistoryDir() string   { return r.Root + "/history" }
