package haproxy

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/confutil"
)

// What Airbnb's synapse puts on a server line besides the options: an `id`
// stable for the server's name, a `cookie` (unless the backend is in mode
// tcp), and the order of the lines (backend_order, server_order_seed).

// hostSeed is the default server_order_seed: the same on every start of
// one host, different from host to host (Airbnb draws rand(2000) at each
// start, which reorders every backend at every restart).
func hostSeed() int64 {
	host, _ := os.Hostname()
	h := fnv.New64a()
	h.Write([]byte(host))
	return int64(h.Sum64() >> 1)
}

// cookieValue is a server's cookie: its name, or with cookie_value_method
// hash the SHA-1 of its name in hex (Digest::SHA1.hexdigest(name)).
func cookieValue(svc *ServiceConfig, server string) string {
	if svc.CookieValueMethod == CookieHash {
		sum := sha1.Sum([]byte(server))
		return hex.EncodeToString(sum[:])
	}
	return server
}

// normLines is lines with their white space collapsed and lower-cased.
func normLines(lines ...[]string) []string {
	var out []string
	for _, ls := range lines {
		for _, l := range ls {
			out = append(out, strings.ToLower(strings.Join(strings.Fields(l), " ")))
		}
	}
	return out
}

// tcpMode reports whether the service's backend runs in mode tcp, where a
// server cookie means nothing: its own (backend or listen) lines say so,
// or the defaults do and its own lines do not say otherwise. Airbnb looks
// at the backend's lines only.
func tcpMode(defaults []string, svc *ServiceConfig) bool {
	mode := ""
	for _, l := range normLines(defaults, svc.Listen, svc.Backend) {
		if m, ok := strings.CutPrefix(l, "mode "); ok {
			mode = m
		}
	}
	return mode == "tcp"
}

// cookiePersistence reports whether the backend persists by cookie (a
// `cookie` directive in the defaults or its own lines): only then does a
// server's cookie change what HAProxy does.
func cookiePersistence(defaults []string, svc *ServiceConfig) bool {
	for _, l := range normLines(defaults, svc.Listen, svc.Backend) {
		if strings.HasPrefix(l, "cookie ") {
			return true
		}
	}
	return false
}

// orderKey is a server's place in the seeded shuffle. Each server's place
// depends on its name and the seed alone, so a server joining or leaving
// does not reorder the others (Ruby's Array#shuffle reorders them all).
func orderKey(seed int64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(seed))
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

// orderBackends returns the backends in the order of the service's
// backend_order. backends is not modified.
func orderBackends(svc *ServiceConfig, seed int64, backends []generators.Backend) []generators.Backend {
	switch svc.BackendOrder {
	case OrderNoShuffle:
		return backends
	case OrderAsc, OrderDesc:
		out := slices.Clone(backends)
		slices.SortStableFunc(out, func(a, b generators.Backend) int {
			c := strings.Compare(a.ServerName(), b.ServerName())
			if svc.BackendOrder == OrderDesc {
				return -c
			}
			return c
		})
		return out
	}
	type keyed struct {
		key uint64
		be  generators.Backend
	}
	ks := make([]keyed, len(backends))
	for i, be := range backends {
		ks[i] = keyed{orderKey(seed, be.ServerName()), be}
	}
	slices.SortStableFunc(ks, func(a, b keyed) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return strings.Compare(a.be.ServerName(), b.be.ServerName())
	})
	out := make([]generators.Backend, len(ks))
	for i, k := range ks {
		out[i] = k.be
	}
	return out
}

// optionID is the `id N` of options ("" fields), 0 without one.
func optionID(opts string) int {
	f := strings.Fields(opts)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "id" {
			if n, err := strconv.Atoi(f[i+1]); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// idKeep is how long the id of a server that left stays reserved for it
// (Airbnb keeps departed servers, and their ids, in its state file for
// state_file_ttl: 24 hours by default), so a server that comes back gets
// its id again and no other server takes it meanwhile.
const idKeep = 24 * time.Hour

// serverIDs gives each server of a backend an `id`, stable for its name
// (name_host:port) for as long as the generator runs, and across restarts
// through the ids of the config file it started with (the ids the running
// HAProxy has). New servers get the lowest free id, as Airbnb's
// find_next_id. Safe for concurrent use: the background writer renders
// with it.
type serverIDs struct {
	mu     sync.Mutex
	max    int
	byName map[string]map[string]int       // backend → server → id
	byID   map[string]map[int]string       // backend → id → server
	seen   map[string]map[string]time.Time // backend → server → last wanted
}

func newServerIDs(max int) *serverIDs {
	if max <= 0 {
		max = DefaultMaxServerID
	}
	return &serverIDs{max: max, byName: map[string]map[string]int{}, byID: map[string]map[int]string{}, seen: map[string]map[string]time.Time{}}
}

// set gives server the id n, taking it from whichever server had it.
func (s *serverIDs) set(be, server string, n int, now time.Time) {
	if s.byName[be] == nil {
		s.byName[be], s.byID[be], s.seen[be] = map[string]int{}, map[int]string{}, map[string]time.Time{}
	}
	if old, ok := s.byName[be][server]; ok {
		if old == n {
			return
		}
		delete(s.byID[be], old)
	}
	if other, ok := s.byID[be][n]; ok {
		delete(s.byName[be], other)
	}
	s.byName[be][server], s.byID[be][n] = n, server
	if _, ok := s.seen[be][server]; !ok {
		s.seen[be][server] = now
	}
}

// load takes the ids of a config file's server lines (the file HAProxy was
// started or last reloaded with).
func (s *serverIDs) load(cfg string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range serverLines(cfg) {
		if f := sl.fields; len(f) > 3 {
			if n := optionID(strings.Join(f[3:], " ")); n > 0 {
				s.set(sl.backend, f[1], n, now)
			}
		}
	}
}

// assign gives every server of backends an id: the `id` of its record's
// options first, then the one the running HAProxy has (running may be
// nil), then the one it had, else the lowest free one. Servers HAProxy
// still has keep their ids reserved; ids of servers gone for idKeep are
// freed.
func (s *serverIDs) assign(be string, backends []generators.Backend, running map[string]serverState, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range running {
		if r.ID > 0 {
			s.set(be, name, r.ID, now)
		}
	}
	for _, bk := range backends {
		if n := optionID(bk.HAProxyServerOptions); n > 0 {
			s.set(be, bk.ServerName(), n, now)
		}
	}
	if s.byName[be] == nil {
		s.byName[be], s.byID[be], s.seen[be] = map[string]int{}, map[int]string{}, map[string]time.Time{}
	}
	for _, bk := range backends {
		s.seen[be][bk.ServerName()] = now
	}
	for name, at := range s.seen[be] {
		if _, live := running[name]; !live && now.Sub(at) > idKeep {
			delete(s.byID[be], s.byName[be][name])
			delete(s.byName[be], name)
			delete(s.seen[be], name)
		}
	}
	next := 1
	for _, bk := range backends {
		name := bk.ServerName()
		if _, ok := s.byName[be][name]; ok {
			continue
		}
		for next <= s.max && s.byID[be][next] != "" {
			next++
		}
		if next > s.max {
			continue // out of ids: the server goes without one (as Airbnb's)
		}
		s.set(be, name, next, now)
	}
}

// get is the id of be/server, 0 for none.
func (s *serverIDs) get(be, server string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byName[be][server]
}

// SharedFrontendName is the frontend haproxy.shared_frontend makes (Airbnb's
// name for it).
const SharedFrontendName = "shared-frontend"

// hostMatchers are the Host-header fetches whose ACL values are hosts a
// service claims in the shared frontend.
var hostMatchers = []string{"hdr(host)", "hdr_dom(host)", "hdr_beg(host)", "hdr_end(host)", "req.hdr(host)", "req.hdr(Host)", "hdr(Host)", "hdr_dom(Host)"}

// claimedHosts lists the hosts a service's shared_frontend lines route:
// the values of its `acl NAME <Host-header fetch> [flags] VALUE...` lines,
// lower-cased.
func claimedHosts(lines []string) []string {
	var out []string
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "acl" || !slices.Contains(hostMatchers, f[2]) {
			continue
		}
		for _, v := range f[3:] {
			if strings.HasPrefix(v, "-") {
				continue // a flag: -i, -m str
			}
			out = append(out, strings.ToLower(strings.TrimSuffix(v, ".")))
		}
	}
	return out
}

// CheckSharedFrontend reports, under p, a service whose shared_frontend
// claims a host another one claims already (HAProxy would send it to
// whichever use_backend comes first), and warns about services with
// shared_frontend lines when haproxy.shared_frontend is not set (Airbnb's
// synapse skips them then). names is the sorted service names.
func CheckSharedFrontend(cfg *Config, services map[string]*ServiceConfig, names []string, p *confutil.Problems) (warnings []string) {
	owner := map[string]string{}
	for _, name := range names {
		svc := services[name]
		if svc == nil || svc.Disabled || len(svc.SharedFrontend) == 0 {
			continue
		}
		if len(cfg.SharedFrontend) == 0 {
			warnings = append(warnings, "services."+name+".haproxy.shared_frontend: haproxy.shared_frontend is not set: these lines are not used")
			continue
		}
		for _, h := range claimedHosts(svc.SharedFrontend) {
			if other, dup := owner[h]; dup && other != name {
				p.Addf("services."+name+".haproxy.shared_frontend", "host %q is also claimed by service %s", h, other)
				continue
			}
			owner[h] = name
		}
	}
	return warnings
}

// renderSharedFrontend writes the shared frontend: haproxy.shared_frontend's
// lines, then each service's, in service order.
func (g *Generator) renderSharedFrontend(b *strings.Builder) {
	if len(g.cfg.SharedFrontend) == 0 {
		return
	}
	b.WriteString("\nfrontend " + SharedFrontendName + "\n")
	for _, l := range g.cfg.SharedFrontend {
		line(b, l)
	}
	for _, name := range g.serviceNames() {
		for _, l := range g.services[name].SharedFrontend {
			line(b, l)
		}
	}
}
