package registry

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxRecordSize bounds an encoded record. Real nerve records are a few hundred
// bytes; anything near this size is a mistake or an attack, and a watcher must
// not hold thousands of them in memory.
const MaxRecordSize = 16 << 10

// Instance is one registered backend: the JSON record that Airbnb's nerve
// writes into ZooKeeper or etcd. Field order and names are part of the wire
// format; [Instance.Encode] writes exactly nerve's compact JSON.
type Instance struct {
	Host string `json:"host" yaml:"host"`
	Port int    `json:"port" yaml:"port"`
	// Name is nerve's instance_id; it names the HAProxy server and is what
	// overrides match besides the host.
	Name string `json:"name,omitempty" yaml:"name"`
	// Weight is nil when the record carries none (HAProxy's default applies).
	Weight               *int              `json:"weight,omitempty" yaml:"weight"`
	HAProxyServerOptions string            `json:"haproxy_server_options,omitempty" yaml:"haproxy_server_options"`
	Labels               map[string]string `json:"labels,omitempty" yaml:"labels"`
	// HAProxyServerID is the HAProxy server id the record asks for
	// (Airbnb's haproxy_server_id); 0: none, the generator allocates one.
	HAProxyServerID int `json:"haproxy_server_id,omitempty" yaml:"haproxy_server_id"`

	// Seq is the registration order the registry gives the record (the
	// ZooKeeper sequence number of its node, the etcd create revision of
	// its key): lower registered earlier. 0 when unknown (static, file,
	// dns). It is not part of the record: leader_election and
	// backend_order no_shuffle use it.
	Seq int64 `json:"-" yaml:"-"`
}

// Address is host:port, with brackets around an IPv6 host.
func (in Instance) Address() string {
	if strings.Contains(in.Host, ":") {
		return "[" + in.Host + "]:" + strconv.Itoa(in.Port)
	}
	return in.Host + ":" + strconv.Itoa(in.Port)
}

// ID identifies an instance within one service: its name when it has one,
// else its address. Two records with the same ID are the same server.
func (in Instance) ID() string {
	if in.Name != "" {
		return in.Name + "@" + in.Address()
	}
	return in.Address()
}

// Clone returns a deep copy.
func (in Instance) Clone() Instance {
	out := in
	if in.Weight != nil {
		w := *in.Weight
		out.Weight = &w
	}
	if in.Labels != nil {
		out.Labels = make(map[string]string, len(in.Labels))
		for k, v := range in.Labels {
			out.Labels[k] = v
		}
	}
	return out
}

// Equal reports whether two instances carry the same data.
func (in Instance) Equal(o Instance) bool {
	if in.Host != o.Host || in.Port != o.Port || in.Name != o.Name ||
		in.HAProxyServerOptions != o.HAProxyServerOptions || in.HAProxyServerID != o.HAProxyServerID || len(in.Labels) != len(o.Labels) {
		return false
	}
	if (in.Weight == nil) != (o.Weight == nil) || (in.Weight != nil && *in.Weight != *o.Weight) {
		return false
	}
	for k, v := range in.Labels {
		if ov, ok := o.Labels[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// Encode validates the instance and returns nerve's compact JSON for it.
// HTML characters are not escaped, as Ruby's to_json does not escape them.
func (in Instance) Encode() ([]byte, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// SortInstances orders instances by ID (stably) so that sets compare and
// render the same way every time.
func SortInstances(s []Instance) {
	slices.SortStableFunc(s, CompareIDs)
}

// CompareIDs compares a.ID() and b.ID() as strings.Compare does, without
// allocating them: a set is sorted (and deduplicated) by ID on every
// watch event, and ID's allocations were a fifth of synapse's garbage when
// every backend was replaced at once.
func CompareIDs(a, b Instance) int {
	var ba, bb [96]byte // on the stack unless an ID is longer
	return bytes.Compare(a.appendID(ba[:0]), b.appendID(bb[:0]))
}

// appendID appends in.ID() to buf.
func (in Instance) appendID(buf []byte) []byte {
	if in.Name != "" {
		buf = append(append(buf, in.Name...), '@')
	}
	if strings.Contains(in.Host, ":") {
		buf = append(append(append(buf, '['), in.Host...), ']')
	} else {
		buf = append(buf, in.Host...)
	}
	return strconv.AppendInt(append(buf, ':'), int64(in.Port), 10)
}

// DecodeOptions select how records that are not nerve JSON are read.
type DecodeOptions struct {
	// Endpoint picks a named entry of a serverset's additionalEndpoints
	// instead of its serviceEndpoint.
	Endpoint string
}

// ErrNotAlive marks a serverset record whose status is not ALIVE: a valid
// record of an instance that must not receive traffic. Callers drop it
// without counting it as a bad record.
var ErrNotAlive = errors.New("serverset member is not ALIVE")

// rawRecord is the union of the nerve record and a Finagle/Aurora serverset.
type rawRecord struct {
	Host                 *string           `json:"host"`
	Port                 json.RawMessage   `json:"port"`
	Name                 *string           `json:"name"`
	Weight               json.RawMessage   `json:"weight"`
	HAProxyServerOptions *string           `json:"haproxy_server_options"`
	HAProxyServerID      json.RawMessage   `json:"haproxy_server_id"`
	Labels               map[string]string `json:"labels"`

	ServiceEndpoint     *endpoint           `json:"serviceEndpoint"`
	AdditionalEndpoints map[string]endpoint `json:"additionalEndpoints"`
	Status              *string             `json:"status"`
	Shard               *int                `json:"shard"`
}

type endpoint struct {
	Host string          `json:"host"`
	Port json.RawMessage `json:"port"`
}

// Decode reads one record: nerve JSON, or a serverset member. The result is
// validated; every error says which field is wrong. Unknown keys are ignored,
// so that records from newer writers still load; a key given twice makes the
// record invalid (see checkDuplicateKeys).
func Decode(data []byte, opts DecodeOptions) (Instance, error) {
	if len(data) > MaxRecordSize {
		return Instance{}, fmt.Errorf("record is %d bytes, over the %d byte limit", len(data), MaxRecordSize)
	}
	var raw rawRecord
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return Instance{}, fmt.Errorf("record is not a JSON object: %w", err)
	}
	// Only white space may follow (dec.More would let a stray '}' or ']'
	// through).
	end := dec.InputOffset()
	if len(bytes.TrimSpace(data[end:])) > 0 {
		return Instance{}, errors.New("record has data after its JSON object")
	}
	if err := checkDuplicateKeys(data[:end]); err != nil {
		return Instance{}, err
	}
	var in Instance
	var err error
	switch {
	case raw.ServiceEndpoint != nil || raw.AdditionalEndpoints != nil:
		in, err = fromServerset(raw, opts)
	default:
		in, err = fromNerve(raw)
	}
	if err != nil {
		return Instance{}, err
	}
	if err := in.Validate(); err != nil {
		return Instance{}, err
	}
	return in, nil
}

func fromNerve(raw rawRecord) (Instance, error) {
	if raw.Host == nil {
		return Instance{}, errors.New("record has no \"host\"")
	}
	if raw.Port == nil {
		return Instance{}, errors.New("record has no \"port\"")
	}
	port, err := decodeInt(raw.Port)
	if err != nil {
		return Instance{}, fmt.Errorf("port: %w", err)
	}
	in := Instance{Host: *raw.Host, Port: port, Labels: raw.Labels}
	if raw.Name != nil {
		in.Name = *raw.Name
	}
	if len(raw.Weight) > 0 && string(raw.Weight) != "null" {
		w, err := decodeInt(raw.Weight)
		if err != nil {
			return Instance{}, fmt.Errorf("weight: %w", err)
		}
		in.Weight = &w
	}
	if raw.HAProxyServerOptions != nil {
		in.HAProxyServerOptions = *raw.HAProxyServerOptions
	}
	if len(raw.HAProxyServerID) > 0 && string(raw.HAProxyServerID) != "null" {
		id, err := decodeInt(raw.HAProxyServerID)
		if err != nil {
			return Instance{}, fmt.Errorf("haproxy_server_id: %w", err)
		}
		in.HAProxyServerID = id
	}
	return in, nil
}

func fromServerset(raw rawRecord, opts DecodeOptions) (Instance, error) {
	if raw.Status != nil && *raw.Status != "ALIVE" {
		return Instance{}, fmt.Errorf("%w (status %q)", ErrNotAlive, *raw.Status)
	}
	ep := raw.ServiceEndpoint
	if opts.Endpoint != "" {
		e, ok := raw.AdditionalEndpoints[opts.Endpoint]
		if !ok {
			return Instance{}, fmt.Errorf("serverset record has no additionalEndpoints[%q]", opts.Endpoint)
		}
		ep = &e
	}
	if ep == nil {
		return Instance{}, errors.New("serverset record has no \"serviceEndpoint\"")
	}
	port, err := decodeInt(ep.Port)
	if err != nil {
		return Instance{}, fmt.Errorf("serviceEndpoint.port: %w", err)
	}
	in := Instance{Host: ep.Host, Port: port}
	if raw.Shard != nil {
		// The member's name is its shard number, as Airbnb's synapse
		// names it (`decoded['shard'].to_s`): dashboards and alerts are
		// keyed on the server names that follow from it.
		in.Name = strconv.Itoa(*raw.Shard)
	}
	return in, nil
}

// decodeInt accepts a JSON integer or a string of decimal digits: Ruby
// writers have been seen to put either.
func decodeInt(raw json.RawMessage) (int, error) {
	s := string(raw)
	if len(s) >= 2 && s[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%.40q is not an integer", s)
	}
	return int(n), nil
}

// childPrefix marks a ZooKeeper child name that carries its record, as
// nerve's use_path_encoding writes it: base64_<len>_<urlsafe b64 JSON>_<seq>.
const childPrefix = "base64_"

// EncodeChildName returns the path-encoded child name prefix for a record
// (ZooKeeper appends the sequence number).
func EncodeChildName(record []byte) string {
	enc := base64.URLEncoding.EncodeToString(record)
	return childPrefix + strconv.Itoa(len(enc)) + "_" + enc + "_"
}

// DecodeChildName reads a path-encoded child name. ok is false when the
// name is not path-encoded, in which case the record must be read from the
// node's data.
func DecodeChildName(name string, opts DecodeOptions) (in Instance, ok bool, err error) {
	rest, found := strings.CutPrefix(name, childPrefix)
	if !found {
		return Instance{}, false, nil
	}
	lenStr, rest, found := strings.Cut(rest, "_")
	n, convErr := strconv.Atoi(lenStr)
	if !found || convErr != nil || n <= 0 || n > len(rest) || n > 2*MaxRecordSize {
		return Instance{}, true, fmt.Errorf("child name %.60q: bad base64 length prefix", name)
	}
	encoded := rest[:n]
	data, decErr := base64.URLEncoding.DecodeString(encoded)
	if decErr != nil {
		data, decErr = base64.RawURLEncoding.DecodeString(encoded)
	}
	if decErr != nil {
		return Instance{}, true, fmt.Errorf("child name %.60q: %v", name, decErr)
	}
	in, err = Decode(data, opts)
	if err != nil {
		return Instance{}, true, fmt.Errorf("child name %.60q: %w", name, err)
	}
	return in, true, nil
}

// SetOf is a watched set: the usable entries' instances taken in key order
// (so that of two records of one server the same one wins every time),
// then deduplicated.
func SetOf[E any](entries map[string]E, use func(E) (Instance, bool)) []Instance {
	keys := make([]string, 0, len(entries))
	for k, e := range entries {
		if _, ok := use(e); ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	set := make([]Instance, len(keys))
	for i, k := range keys {
		set[i], _ = use(entries[k])
	}
	return Dedupe(set)
}

// Dedupe sorts s by ID and keeps the first instance of each ID: the same server
// registered twice (a retried create, two nerves) must be one HAProxy server.
func Dedupe(s []Instance) []Instance {
	SortInstances(s)
	out := s[:0]
	for i, in := range s {
		if i > 0 && CompareIDs(in, out[len(out)-1]) == 0 {
			continue
		}
		out = append(out, in)
	}
	return out
}

// EqualSets reports whether two sorted, deduplicated sets are equal.
func EqualSets(a, b []Instance) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		// Seq counts too: a record re-created with the same data is a new
		// registration, and leader_election follows registration order.
		if !a[i].Equal(b[i]) || a[i].Seq != b[i].Seq {
			return false
		}
	}
	return true
}

// checkDuplicateKeys refuses a JSON value in which an object has a key
// twice, at any depth. Readers disagree on which copy wins (Go and Ruby
// take the last, others the first), so {"host":"10.0.0.5",…,"host":"evil"}
// would look harmless to one reader and route traffic elsewhere in
// another. encoding/json also matches struct fields case-insensitively
// ("HOST" fills host), so keys are compared folded the way it folds them,
// except in the objects read as maps (labels, additionalEndpoints), whose
// keys are taken as they are.
//
// data must be exactly one valid JSON value (Decode has checked it), so a
// plain byte scan suffices: 1.4–3.5 µs for a nerve record where a walk with
// json.Decoder.Token took 7–11 µs (FuzzDuplicateKeys checks the two agree).
func checkDuplicateKeys(data []byte) error {
	var stack []keyFrame
	expectKey := false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; c {
		case '{', '[':
			path := ""
			if n := len(stack); n > 0 {
				if top := &stack[n-1]; top.object {
					path = keyPath(top.path, top.lastKey)
				} else {
					path = top.path + "[]"
				}
			}
			object := c == '{'
			stack = append(stack, keyFrame{object: object, path: path,
				exact: object && (path == "labels" || path == "additionalEndpoints")})
			expectKey = object
		case '}', ']':
			stack = stack[:len(stack)-1]
			expectKey = false
		case ',':
			expectKey = stack[len(stack)-1].object
		case ':':
			expectKey = false
		case '"':
			end := i + 1
			escaped := false
			for data[end] != '"' {
				if data[end] == '\\' {
					escaped = true
					end++
				}
				end++
			}
			if expectKey {
				top := &stack[len(stack)-1]
				key := string(data[i+1 : end])
				if escaped || !utf8.ValidString(key) {
					// As encoding/json reads it: escapes resolved,
					// invalid UTF-8 replaced.
					_ = json.Unmarshal(data[i:end+1], &key)
				}
				k := key
				if !top.exact {
					k = foldKey(key)
				}
				if !top.add(k) {
					return fmt.Errorf("%s: key %.40q appears twice", keyPath(top.path, key), key)
				}
				top.lastKey = key
				expectKey = false
			}
			i = end
		}
	}
	return nil
}

// keyFrame is an open object or array in checkDuplicateKeys.
type keyFrame struct {
	object, exact bool
	path, lastKey string
	keys          []string            // the keys so far, while few
	set           map[string]struct{} // and once many (a hostile record)
}

// add records k and reports whether it is new.
func (f *keyFrame) add(k string) bool {
	if f.set != nil {
		if _, dup := f.set[k]; dup {
			return false
		}
		f.set[k] = struct{}{}
		return true
	}
	if slices.Contains(f.keys, k) {
		return false
	}
	f.keys = append(f.keys, k)
	if len(f.keys) > 16 {
		f.set = make(map[string]struct{}, 2*len(f.keys))
		for _, k := range f.keys {
			f.set[k] = struct{}{}
		}
		f.keys = nil
	}
	return true
}

func keyPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// foldKey folds a key as encoding/json does when it matches a key to a
// struct field: two keys fold equal exactly when bytes.EqualFold says so.
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(unicode.ToUpper(unicode.ToLower(r)))
	}
	return b.String()
}
