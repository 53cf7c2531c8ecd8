package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on fields that reach haproxy.cfg or a registry path.
const (
	MaxNameLen       = 128
	MaxHostLen       = 253
	MaxLabels        = 64
	MaxLabelKeyLen   = 128
	MaxLabelValueLen = 1024
	MaxWeight        = 256 // HAProxy's own bound for a server weight
	maxOptionsLen    = 1024
	// MaxServerID bounds a record's server id (HAProxy's ids are positive
	// ints); synapse's max_server_id bounds it further.
	MaxServerID = 1<<31 - 1
)

// Validate checks every field against the character sets that keep a record
// from changing the meaning of haproxy.cfg, and reports the first field that
// fails, by its JSON key.
func (in Instance) Validate() error {
	if err := ValidateHost(in.Host); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if in.Port < 1 || in.Port > 65535 {
		return fmt.Errorf("port: %d is outside 1..65535", in.Port)
	}
	if in.Name != "" {
		if err := ValidateName(in.Name); err != nil {
			return fmt.Errorf("name: %w", err)
		}
	}
	if in.Weight != nil && (*in.Weight < 0 || *in.Weight > MaxWeight) {
		return fmt.Errorf("weight: %d is outside 0..%d", *in.Weight, MaxWeight)
	}
	if in.HAProxyServerID < 0 || in.HAProxyServerID > MaxServerID {
		return fmt.Errorf("haproxy_server_id: %d is outside 0..%d", in.HAProxyServerID, MaxServerID)
	}
	if err := ValidateServerOptions(in.HAProxyServerOptions); err != nil {
		return fmt.Errorf("haproxy_server_options: %w", err)
	}
	return validateLabels(in.Labels)
}

// ValidateHost accepts an IPv4 or IPv6 address (no zone) or a DNS name.
func ValidateHost(h string) error {
	if h == "" {
		return errors.New("empty")
	}
	if len(h) > MaxHostLen {
		return fmt.Errorf("longer than %d characters", MaxHostLen)
	}
	if addr, err := netip.ParseAddr(h); err == nil {
		if addr.Zone() != "" {
			return fmt.Errorf("%q: IPv6 zones are not accepted", h)
		}
		return nil
	}
	if strings.Contains(h, ":") {
		return fmt.Errorf("%.80q is not a valid IP address", h)
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%.80q is not a valid DNS name (empty or over-long label)", h)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%.80q is not a valid DNS name (label starts or ends with '-')", h)
		}
		for _, r := range label {
			if !(isAlnum(r) || r == '-' || r == '_') {
				return fmt.Errorf("%.80q is not a valid DNS name (character %q)", h, r)
			}
		}
	}
	return nil
}

// ValidateName accepts the characters HAProxy allows in an identifier:
// letters, digits, '-', '_', '.' and ':'.
func ValidateName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("longer than %d characters", MaxNameLen)
	}
	for _, r := range s {
		if !(isAlnum(r) || r == '-' || r == '_' || r == '.' || r == ':') {
			return fmt.Errorf("%.80q has character %q; allowed are letters, digits and - _ . :", s, r)
		}
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("labels: %d labels, over the limit of %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLen {
			return fmt.Errorf("labels: key %.80q is empty or longer than %d", k, MaxLabelKeyLen)
		}
		for _, r := range k {
			if !(isAlnum(r) || r == '-' || r == '_' || r == '.' || r == '/') {
				return fmt.Errorf("labels: key %.80q has character %q", k, r)
			}
		}
		if err := ValidateText(v, MaxLabelValueLen); err != nil {
			return fmt.Errorf("labels.%s: %w", k, err)
		}
	}
	return nil
}

// ValidateText accepts free text (a label value, an override reason) of at
// most max bytes: valid UTF-8, no control characters, no '#'.
func ValidateText(s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("longer than %d bytes", max)
	}
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '#' || r == '\u2028' || r == '\u2029' {
			return fmt.Errorf("%.80q has forbidden character %q", s, r)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
}

// argKind is the shape of a server keyword's single argument.
type argKind int

const (
	argNone     argKind = iota
	argInt              // a non-negative integer
	argDuration         // HAProxy time: digits with an optional us|ms|s|m|h|d unit
	argToken            // a conservative token: paths, names, ALPN lists, addresses
	argEnum             // one of a fixed set
	argSNI              // a sample expression, from a short safe list
)

type keyword struct {
	kind argKind
	max  int      // argInt: the upper bound
	enum []string // argEnum: the accepted values
}

// serverKeywords is the allow-list for a record's haproxy_server_options.
// `id` is allowed: the HAProxy generator gives it to the server unless
// another record has it (it never reaches HAProxy twice). Keywords that
// would let a record take over the server's identity (cookie, redir) or
// that cannot be validated simply (source, usesrc) are left out on purpose,
// and so are the operator-only keywords below.
var serverKeywords = map[string]keyword{
	"backup": {}, "no-backup": {}, "check": {}, "no-check": {},
	"check-ssl": {}, "no-check-ssl": {}, "check-send-proxy": {},
	"send-proxy": {}, "send-proxy-v2": {}, "send-proxy-v2-ssl": {}, "send-proxy-v2-ssl-cn": {}, "no-send-proxy": {}, "no-send-proxy-v2": {},
	"ssl": {}, "no-ssl": {}, "agent-check": {}, "no-agent-check": {},
	"enabled": {}, "non-stick": {}, "stick": {}, "tfo": {}, "no-tfo": {},
	"force-tlsv12": {}, "force-tlsv13": {}, "no-sslv3": {}, "no-tlsv10": {}, "no-tlsv11": {},
	"ssl-reuse": {}, "no-ssl-reuse": {}, "tls-tickets": {}, "no-tls-tickets": {}, "allow-0rtt": {},

	"id":               {kind: argInt, max: MaxServerID},
	"maxconn":          {kind: argInt, max: 1 << 24},
	"minconn":          {kind: argInt, max: 1 << 24},
	"maxqueue":         {kind: argInt, max: 1 << 24},
	"rise":             {kind: argInt, max: 1000},
	"fall":             {kind: argInt, max: 1000},
	"port":             {kind: argInt, max: 65535},
	"agent-port":       {kind: argInt, max: 65535},
	"error-limit":      {kind: argInt, max: 1 << 24},
	"max-reuse":        {kind: argInt, max: 1 << 24},
	"pool-max-conn":    {kind: argInt, max: 1 << 24},
	"pool-low-conn":    {kind: argInt, max: 1 << 24},
	"inter":            {kind: argDuration},
	"fastinter":        {kind: argDuration},
	"downinter":        {kind: argDuration},
	"slowstart":        {kind: argDuration},
	"agent-inter":      {kind: argDuration},
	"pool-purge-delay": {kind: argDuration},
	"on-error":         {kind: argEnum, enum: []string{"fastinter", "fail-check", "sudden-death", "mark-down"}},
	"on-marked-down":   {kind: argEnum, enum: []string{"shutdown-sessions"}},
	"on-marked-up":     {kind: argEnum, enum: []string{"shutdown-backup-sessions"}},
	"observe":          {kind: argEnum, enum: []string{"layer4", "layer7"}},
	"verify":           {kind: argEnum, enum: []string{"none", "required"}},
	"addr":             {kind: argToken},
	"agent-addr":       {kind: argToken},
	"agent-send":       {kind: argToken},
	"sni":              {kind: argSNI},
	"check-sni":        {kind: argToken},
	"alpn":             {kind: argToken},
	"check-alpn":       {kind: argToken},
	"proto":            {kind: argToken},
	"ciphers":          {kind: argToken},
	"verifyhost":       {kind: argToken},
}

// operatorOnlyKeywords are server keywords a record may not carry, each
// with the reason given when one does. A record is written by whoever can
// write the registry: it must not make HAProxy (often root) open a file of
// its choosing (the error says whether it exists), enter a network
// namespace, tie its health to another server, or put itself in config
// maintenance (a server HAProxy then refuses to delete at runtime). And the
// record's `weight` field is its one weight: a second one in the options
// would fight overrides and the runtime API. The operator's own
// server_options (synapse config, checked by haproxy -c) may use them all.
var operatorOnlyKeywords = map[string]string{
	"crt":       "names a file",
	"ca-file":   "names a file",
	"crl-file":  "names a file",
	"namespace": "names a network namespace",
	"track":     "refers to another server",
	"disabled":  "puts the server in config maintenance (use an override: synctl maint)",
	"weight":    "duplicates the record's weight field (use \"weight\")",
}

// ServerKeywords lists the keywords accepted in a record's
// haproxy_server_options.
func ServerKeywords() []string {
	out := make([]string, 0, len(serverKeywords))
	for k := range serverKeywords {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ValidateServerOptions splits haproxy_server_options into tokens and checks
// each keyword against the allow-list and each argument against its shape.
func ValidateServerOptions(opts string) error {
	if len(opts) > maxOptionsLen {
		return fmt.Errorf("longer than %d bytes", maxOptionsLen)
	}
	for _, r := range opts {
		if r != ' ' && r != '\t' && (unicode.IsControl(r) || r > unicode.MaxASCII) {
			return fmt.Errorf("forbidden character %q", r)
		}
		if r == '#' {
			return errors.New("forbidden character '#'")
		}
	}
	tokens := strings.Fields(opts)
	for i := 0; i < len(tokens); i++ {
		name := tokens[i]
		if why, ok := operatorOnlyKeywords[name]; ok {
			return fmt.Errorf("keyword %q is not allowed in a record: it %s", name, why)
		}
		kw, ok := serverKeywords[name]
		if !ok {
			return fmt.Errorf("keyword %.40q is not allowed", name)
		}
		if kw.kind == argNone {
			continue
		}
		if i+1 >= len(tokens) {
			return fmt.Errorf("keyword %q needs an argument", name)
		}
		i++
		if err := kw.check(tokens[i]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (kw keyword) check(arg string) error {
	switch kw.kind {
	case argInt:
		n, err := strconv.Atoi(arg)
		if err != nil || n < 0 || n > kw.max {
			return fmt.Errorf("%.40q is not an integer in 0..%d", arg, kw.max)
		}
	case argDuration:
		digits := strings.TrimRight(arg, "usmhd")
		unit := arg[len(digits):]
		if _, err := strconv.ParseUint(digits, 10, 31); err != nil {
			return fmt.Errorf("%.40q is not a duration", arg)
		}
		switch unit {
		case "", "us", "ms", "s", "m", "h", "d":
		default:
			return fmt.Errorf("%.40q has unknown unit %q", arg, unit)
		}
	case argEnum:
		for _, v := range kw.enum {
			if arg == v {
				return nil
			}
		}
		return fmt.Errorf("%.40q is not one of %s", arg, strings.Join(kw.enum, ", "))
	case argSNI:
		return checkSNI(arg)
	case argToken:
		for _, r := range arg {
			if !(isAlnum(r) || strings.ContainsRune("-_.:/,()=+@*[]", r)) {
				return fmt.Errorf("%.40q has character %q", arg, r)
			}
		}
	}
	return nil
}

// checkSNI accepts the sample expressions a record may give as its sni:
// the client's SNI or Host header, or a fixed name, optionally lower-cased.
// The full language is not for records: a fetch like env(SECRET) would send
// synapse host's environment to whatever host the record names, and a
// converter like map(/etc/shadow) makes HAProxy open a file.
func checkSNI(arg string) error {
	fetch, conv, _ := strings.Cut(arg, ",")
	switch conv {
	case "", "lower":
	default:
		return fmt.Errorf("%.40q: only the converter lower is allowed in a record", arg)
	}
	switch strings.ToLower(fetch) {
	case "ssl_fc_sni", "req.hdr(host)", "hdr(host)":
		return nil
	}
	if name, ok := strings.CutPrefix(fetch, "str("); ok && strings.HasSuffix(name, ")") {
		if err := ValidateHost(strings.TrimSuffix(name, ")")); err == nil {
			return nil
		}
	}
	return fmt.Errorf("%.40q: a record's sni is ssl_fc_sni, req.hdr(host), hdr(host) or str(NAME), optionally with ,lower", arg)
}

// ValidatePath checks a registry path (a ZooKeeper path, an etcd key
// prefix without its trailing slash), the same way for both backends so
// that configs move between them unchanged: absolute, no empty, "." or
// ".." element, no trailing slash, text that ValidateText accepts. The
// root "/" is a valid path; whether a backend accepts it where a prefix
// is wanted is its own call.
func ValidatePath(p string) error {
	if p == "/" {
		return nil
	}
	if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return fmt.Errorf("%q must start with / and not end with /", p)
	}
	for _, el := range strings.Split(p[1:], "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%q has an empty, . or .. element", p)
		}
	}
	if err := ValidateText(p, 1024); err != nil {
		return fmt.Errorf("%q: %w", p, err)
	}
	return nil
}
