package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// OverrideState is what an override does to the servers it matches.
type OverrideState string

// The override states. Ready clears a drain or maint but can still carry a
// weight.
const (
	StateReady OverrideState = "ready"
	StateDrain OverrideState = "drain"
	StateMaint OverrideState = "maint"
	// StateConfirm is not a server state: it is an operator's confirmation
	// that the removals a synapse's panic threshold holds back in the
	// listed services are intended (synctl confirm). While it is active,
	// synapses apply every removal in those services; it matches no
	// server. Target names the first service, so the record's key
	// (SERVICE@SERVICES~confirm) never meets a drain's.
	StateConfirm OverrideState = "confirm"
)

// MaxReasonLen bounds an override's reason.
const MaxReasonLen = 512

// Override is the fleet-wide record synctl writes and every synapse applies:
// put a host (or one named instance) in drain or maint, or give it a weight,
// in all services or the listed ones, until it expires.
type Override struct {
	// Target is the host or instance name the override matches.
	Target    string        `json:"target"`
	State     OverrideState `json:"state"`
	Weight    *int          `json:"weight,omitempty"`
	Services  []string      `json:"services,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	By        string        `json:"by,omitempty"`
	At        time.Time     `json:"at"`
	ExpiresAt *time.Time    `json:"expires_at,omitempty"`
}

// Key is the override's name in the registry: the target, and the sorted
// services after '@' when it is limited to some, so a drain of one service
// and a drain of the whole host are separate records. A weight-only
// override (state ready with a weight) ends in "~weight", so that setting a
// weight never replaces a drain, and undraining keeps the weight.
func (o Override) Key() string {
	if o.State == StateConfirm {
		return OverrideKey(o.Target, o.Services, false) + "~confirm"
	}
	return OverrideKey(o.Target, o.Services, o.State == StateReady && o.Weight != nil)
}

// OverrideKey is the key of an override on target for services.
func OverrideKey(target string, services []string, weightOnly bool) string {
	k := target
	if len(services) > 0 {
		s := slices.Clone(services)
		sort.Strings(s)
		k += "@" + strings.Join(s, ",")
	}
	if weightOnly {
		k += "~weight"
	}
	return k
}

// Validate checks every field; the error names the field.
func (o Override) Validate() error {
	if err := ValidateName(o.Target); err != nil {
		if herr := ValidateHost(o.Target); herr != nil {
			return fmt.Errorf("target: %w", err)
		}
	}
	switch o.State {
	case StateReady, StateDrain, StateMaint:
	case StateConfirm:
		// A confirmation names its services, carries no weight, and
		// expires: a standing one would switch the guard off for good.
		if len(o.Services) == 0 {
			return errors.New("services: a confirmation names the services it confirms")
		}
		if o.Weight != nil {
			return errors.New("weight: a confirmation carries no weight")
		}
		if o.ExpiresAt == nil {
			return errors.New("expires_at: a confirmation must expire")
		}
	default:
		return fmt.Errorf("state: %q is not one of ready, drain, maint, confirm", o.State)
	}
	if o.Weight != nil && (*o.Weight < 0 || *o.Weight > MaxWeight) {
		return fmt.Errorf("weight: %d is outside 0..%d", *o.Weight, MaxWeight)
	}
	for i, s := range o.Services {
		if err := ValidateName(s); err != nil {
			return fmt.Errorf("services[%d]: %w", i, err)
		}
	}
	if err := ValidateText(o.Reason, MaxReasonLen); err != nil {
		return fmt.Errorf("reason: %w", err)
	}
	if err := ValidateText(o.By, MaxNameLen); err != nil {
		return fmt.Errorf("by: %w", err)
	}
	if o.At.IsZero() {
		return errors.New("at: missing")
	}
	return nil
}

// Active reports whether the override applies at now (it has not expired).
func (o Override) Active(now time.Time) bool {
	return o.ExpiresAt == nil || now.Before(*o.ExpiresAt)
}

// Matches reports whether the override applies to inst in service.
func (o Override) Matches(service string, inst Instance) bool {
	if o.State == StateConfirm {
		return false // a confirmation is about a service, not a server
	}
	if o.Target != inst.Host && (inst.Name == "" || o.Target != inst.Name) {
		return false
	}
	return len(o.Services) == 0 || slices.Contains(o.Services, service)
}

// Encode validates the override and returns its JSON.
func (o Override) Encode() ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(o)
}

// DecodeOverride reads and validates one override record.
func DecodeOverride(data []byte) (Override, error) {
	var o Override
	if err := decodeStrict(data, &o); err != nil {
		return Override{}, fmt.Errorf("override: %w", err)
	}
	if err := o.Validate(); err != nil {
		return Override{}, fmt.Errorf("override: %w", err)
	}
	return o, nil
}

// OverrideSet is every override in the registry at one revision.
type OverrideSet struct {
	// Revision orders sets: a later write always gives a larger revision.
	// It is the etcd store revision, or the ZooKeeper zxid.
	Revision  int64
	Overrides []Override
}

// Ack says which override revision one synapse has applied.
type Ack struct {
	ID       string    `json:"id"`
	Revision int64     `json:"revision"`
	At       time.Time `json:"at"`
	// Services maps each service this synapse serves from the same
	// registry to the path it watches, so synctl can find the backends;
	// none, when ServicesInCatalog.
	Services map[string]string `json:"services"`
	// ServicesInCatalog: the synapse leaves its services to its catalog
	// (the ack says "services": null), which it has written and checks.
	// At 1000 services the map is ~40 KB of JSON, which every synapse
	// would otherwise write at every override change. An ack without the
	// key comes from a synapse before this field, which serves none from
	// this registry; one with {} serves none. Both older and newer synctl
	// builds read all three.
	ServicesInCatalog bool `json:"-"`
	// Quarantined lists the servers this synapse's HAProxy refused and it
	// set aside ("service/server: reason"), at most MaxAckQuarantined.
	Quarantined []string `json:"quarantined,omitempty"`
	// Held lists the removals this synapse's panic threshold holds back
	// ("service/server"), at most MaxAckQuarantined: the registry (or an
	// override) takes them out, but more than the threshold's share of
	// the service at once. synctl confirm SERVICE lets them go.
	Held []string `json:"held,omitempty"`
}

// ErrTooLarge is what encoding a record over its size limit returns.
var ErrTooLarge = errors.New("record too large")

// MaxAckSize bounds an encoded ack: it may carry the same map as a
// catalog, so the same bound (a synapse with 1000 services writes ~40 KB,
// past the 16 KiB other records are held to).
const MaxAckSize = MaxCatalogSize

// MaxAckQuarantined bounds the quarantined servers one ack names.
const MaxAckQuarantined = 100

// Validate checks the ack's fields.
func (a Ack) Validate() error {
	if err := ValidateName(a.ID); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	if a.ServicesInCatalog && len(a.Services) > 0 {
		return errors.New("services: both listed and left to the catalog")
	}
	if a.Revision < 0 {
		return fmt.Errorf("revision: %d is negative", a.Revision)
	}
	for name, path := range a.Services {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("services: %w", err)
		}
		if err := ValidateText(path, 1024); err != nil || !strings.HasPrefix(path, "/") {
			return fmt.Errorf("services.%s: path %q is not valid", name, path)
		}
	}
	if len(a.Quarantined) > MaxAckQuarantined {
		return fmt.Errorf("quarantined: %d entries, at most %d", len(a.Quarantined), MaxAckQuarantined)
	}
	for i, q := range a.Quarantined {
		if err := ValidateText(q, 512); err != nil {
			return fmt.Errorf("quarantined[%d]: %w", i, err)
		}
	}
	if len(a.Held) > MaxAckQuarantined {
		return fmt.Errorf("held: %d entries, at most %d", len(a.Held), MaxAckQuarantined)
	}
	for i, h := range a.Held {
		if err := ValidateText(h, 512); err != nil {
			return fmt.Errorf("held[%d]: %w", i, err)
		}
	}
	return nil
}

// CheckAckLive refuses an ack that could lie: one stored to outlive its
// writer's session or lease (live false: a plain ZooKeeper node, an etcd
// key without a lease), which would say "applied" for a synapse that is
// gone, or one stored under another name than its synapse's ID.
func CheckAckLive(name string, a Ack, live bool) error {
	if !live {
		return fmt.Errorf("ack %s: not tied to a session or lease (an ack outlives its synapse only if planted)", name)
	}
	if name != a.ID {
		return fmt.Errorf("ack %s: claims to be synapse %q", name, a.ID)
	}
	return nil
}

// HistoryEntry is one line of the audit trail synctl keeps in the registry.
type HistoryEntry struct {
	At        time.Time  `json:"at"`
	By        string     `json:"by"`
	Action    string     `json:"action"` // drain, maint, weight, add-to-lb, weight-reset, confirm
	Targets   []string   `json:"targets"`
	Services  []string   `json:"services,omitempty"`
	Weight    *int       `json:"weight,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Revision  int64      `json:"revision"`
	Forced    bool       `json:"forced,omitempty"`
}

// Validate checks the entry's fields.
func (h HistoryEntry) Validate() error {
	if h.At.IsZero() {
		return errors.New("at: missing")
	}
	if err := ValidateName(h.Action); err != nil {
		return fmt.Errorf("action: %w", err)
	}
	for i, t := range h.Targets {
		if ValidateName(t) != nil && ValidateHost(t) != nil {
			return fmt.Errorf("targets[%d]: %q is not a host or name", i, t)
		}
	}
	for i, s := range h.Services {
		if err := ValidateName(s); err != nil {
			return fmt.Errorf("services[%d]: %w", i, err)
		}
	}
	if err := ValidateText(h.Reason, MaxReasonLen); err != nil {
		return fmt.Errorf("reason: %w", err)
	}
	if err := ValidateText(h.By, MaxNameLen); err != nil {
		return fmt.Errorf("by: %w", err)
	}
	return nil
}

// DecodeHistoryEntry reads and validates one audit-trail entry.
func DecodeHistoryEntry(data []byte) (HistoryEntry, error) {
	var h HistoryEntry
	if err := decodeStrict(data, &h); err != nil {
		return HistoryEntry{}, fmt.Errorf("history: %w", err)
	}
	if err := h.Validate(); err != nil {
		return HistoryEntry{}, fmt.Errorf("history: %w", err)
	}
	return h, nil
}

// MaxHistory is how many audit-trail entries the registry keeps.
const MaxHistory = 1000

// DecodeAck reads and validates one ack record.
//
// Unlike overrides, an ack's unknown keys are ignored: acks are written by
// synapses and read by synctl, and during a rollout a newer synapse's ack
// (a field added to it) must still be read by an older synctl, which would
// otherwise take that synapse for dead and not wait for it. An override is
// decoded strictly: a key a synapse did not understand could change what
// it takes out.
func DecodeAck(data []byte) (Ack, error) {
	var a Ack
	if err := decodeRecord(data, &a, false, MaxAckSize); err != nil {
		return Ack{}, fmt.Errorf("ack: %w", err)
	}
	// "services": null and no "services" decode alike; only the first
	// says the catalog holds them.
	var services struct {
		Raw json.RawMessage `json:"services"`
	}
	if err := json.Unmarshal(data, &services); err != nil {
		return Ack{}, fmt.Errorf("ack: %w", err)
	}
	a.ServicesInCatalog = bytes.Equal(services.Raw, []byte("null"))
	if err := a.Validate(); err != nil {
		return Ack{}, fmt.Errorf("ack: %w", err)
	}
	return a, nil
}

// EncodeAck writes an ack's JSON: "services" is null when the ack leaves
// them to the catalog, and {} (not null) when it names none. An ack over
// MaxAckSize is refused.
func EncodeAck(a Ack) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	switch {
	case a.ServicesInCatalog:
		a.Services = nil
	case a.Services == nil:
		a.Services = map[string]string{}
	}
	return marshalWithin(a, "ack of "+a.ID, MaxAckSize)
}

// marshalWithin encodes v, refusing an encoding over limit bytes
// (ErrTooLarge); what names the record in the error.
func marshalWithin(v any, what string, limit int) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(data) > limit {
		return nil, fmt.Errorf("%s is %d bytes, over the %d byte limit: %w", what, len(data), limit, ErrTooLarge)
	}
	return data, nil
}

// decodeStrict decodes our own records: unknown keys are errors.
func decodeStrict(data []byte, v any) error { return decodeRecord(data, v, true, MaxRecordSize) }

// decodeRecord decodes one of our own records: one JSON object within
// limit bytes, unknown keys errors when strict.
func decodeRecord(data []byte, v any, strict bool, limit int) error {
	if len(data) > limit {
		return fmt.Errorf("record is %d bytes, over the %d byte limit", len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}
