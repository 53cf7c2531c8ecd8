package haproxy

import (
	"cmp"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/generators"
)

// optionID is the `id N` of options ("" fields), 0 without one (or with
// one that is not a positive integer).
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

// recordID is the id a record asks for (Airbnb's haproxy_server_id, or an
// `id N` in its haproxy_server_options), 0 for none. The record's options
// never carry the id onto the server line (serverParams strips it): the
// line's `id` is the one serverIDs settles on, so two records asking for
// one id never give HAProxy two servers with it.
//
// Once registry.Instance decodes haproxy_server_id, the field comes first:
//
//	if bk.HAProxyServerID > 0 { return bk.HAProxyServerID }
func recordID(bk generators.Backend) int {
	if bk.HAProxyServerID > 0 {
		return bk.HAProxyServerID
	}
	return optionID(bk.HAProxyServerOptions)
}

// idKeep is how long the id of a server that left stays reserved for it
// (Airbnb keeps departed servers, and their ids, in its state file for
// state_file_ttl: 24 hours by default), so a server that comes back gets
// its id again and no other server takes it meanwhile.
const idKeep = 24 * time.Hour

// Why a record's id was not given to its server (the reason label of
// synapse_haproxy_server_ids_refused_total).
const (
	idTaken      = "taken"        // another record asking for it keeps it
	idOutOfRange = "out_of_range" // outside 1..max_server_id
)

// serverIDs gives each server of a backend an `id`, stable for its name
// (name_host:port) for as long as the generator runs, and across restarts
// through the ids of the config file it started with (the ids the running
// HAProxy has). A record that asks for an id gets it; new servers get the
// lowest free id, as Airbnb's find_next_id. Safe for concurrent use: the
// background writer renders with it.
type serverIDs struct {
	log *slog.Logger
	m   *Metrics

	mu     sync.Mutex
	max    int
	byName map[string]map[string]int       // backend → server → id
	byID   map[string]map[int]string       // backend → id → server
	seen   map[string]map[string]time.Time // backend → server → last wanted
	// refused: the id a server asked for and did not get (logged and
	// counted once, until it asks for another or gets it).
	refused map[serverKey]int
}

func newServerIDs(max int, log *slog.Logger, m *Metrics) *serverIDs {
	if max <= 0 {
		max = DefaultMaxServerID
	}
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &serverIDs{log: log, m: m, max: max, byName: map[string]map[string]int{}, byID: map[string]map[int]string{},
		seen: map[string]map[string]time.Time{}, refused: map[serverKey]int{}}
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
			if n := optionID(strings.Join(f[3:], " ")); n > 0 && n <= s.max {
				s.set(sl.backend, f[1], n, now)
			}
		}
	}
}

// assign gives every server of backends an id: the one its record asks
// for first (see claim), then the one the running HAProxy has (running
// may be nil), then the one it had, else the lowest free one. Servers
// HAProxy still has keep their ids reserved; ids of servers gone for
// idKeep are freed.
func (s *serverIDs) assign(be string, backends []generators.Backend, running map[string]serverState, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range running {
		if r.ID > 0 {
			s.set(be, name, r.ID, now)
		}
	}
	s.claim(be, backends, running, now)
	if s.byName[be] == nil {
		s.byName[be], s.byID[be], s.seen[be] = map[string]int{}, map[int]string{}, map[string]time.Time{}
	}
	for _, bk := range backends {
		name := bk.ServerName()
		if n, ok := s.byName[be][name]; ok && s.byID[be][n] == name {
			// The name as byName and byID hold it: a map assignment
			// stores its key again, and the fresh string would be one
			// more copy of every server name (0.3 MB at 10k).
			name = s.byID[be][n]
		}
		s.seen[be][name] = now
	}
	for name, at := range s.seen[be] {
		if _, live := running[name]; !live && now.Sub(at) > idKeep {
			delete(s.byID[be], s.byName[be][name])
			delete(s.byName[be], name)
			delete(s.seen[be], name)
			delete(s.refused, serverKey{be, name})
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

// idClaim is a record asking for an id.
type idClaim struct {
	name   string
	id     int
	seq    int64 // registration order; 0 unknown
	holder bool  // the server has that id already
}

// claim gives the records of backends that ask for an id that id. Two
// records asking for one id: the server that has it keeps it (a running
// server is never renumbered: HAProxy would refuse the other's `add
// server ... id N`), else the older record (lower registration order;
// unknown counts as newest; then by name). A server HAProxy runs with the
// id keeps it too, asking or not (ids of servers that left are only
// reserved: a record takes them). The others fall back to an id of their
// own, as does a record asking for an id outside 1..max_server_id: they
// keep serving; each refusal is logged and counted once. s.mu is held.
func (s *serverIDs) claim(be string, backends []generators.Backend, running map[string]serverState, now time.Time) {
	byID := map[int][]idClaim{}
	for _, bk := range backends {
		name := bk.ServerName()
		key := serverKey{be, name}
		n := recordID(bk)
		switch {
		case n == 0:
			delete(s.refused, key)
		case n > s.max:
			s.refuse(key, n, idOutOfRange, "")
			if s.byName[be][name] == n { // loaded from a file written with a larger max
				delete(s.byID[be], n)
				delete(s.byName[be], name)
			}
		default:
			byID[n] = append(byID[n], idClaim{name: name, id: n, seq: bk.Seq, holder: s.byName[be][name] == n})
		}
	}
	for n, claims := range byID {
		if h := s.byID[be][n]; h != "" && running[h].ID == n && !slices.ContainsFunc(claims, func(c idClaim) bool { return c.name == h }) {
			for _, c := range claims {
				s.refuse(serverKey{be, c.name}, n, idTaken, h)
			}
			continue
		}
		slices.SortFunc(claims, func(a, b idClaim) int {
			if a.holder != b.holder {
				if a.holder {
					return -1
				}
				return 1
			}
			if c := cmp.Compare(seqOrder(a.seq), seqOrder(b.seq)); c != 0 {
				return c
			}
			return strings.Compare(a.name, b.name)
		})
		s.set(be, claims[0].name, n, now)
		delete(s.refused, serverKey{be, claims[0].name})
		for _, c := range claims[1:] {
			if s.byName[be][c.name] == n {
				delete(s.byName[be], c.name) // cannot happen: the holder sorts first
			}
			s.refuse(serverKey{be, c.name}, n, idTaken, claims[0].name)
		}
	}
}

// seqOrder sorts an unknown registration order (0) after every known one.
func seqOrder(seq int64) uint64 {
	if seq <= 0 {
		return ^uint64(0)
	}
	return uint64(seq)
}

// refuse logs and counts, once, that key does not get the id n it asks for.
func (s *serverIDs) refuse(key serverKey, n int, why, holder string) {
	if s.refused[key] == n {
		return
	}
	s.refused[key] = n
	s.m.ServerIDsRefused.WithLabelValues(why).Inc()
	if why == idTaken {
		s.log.Warn("server id asked for by the record is another's; the server gets an id of its own", "server", key.String(), "id", n, "kept_by", holder)
		return
	}
	s.log.Warn("server id asked for by the record is outside 1..max_server_id; the server gets an id of its own", "server", key.String(), "id", n, "max_server_id", s.max)
}

// get is the id of be/server, 0 for none.
func (s *serverIDs) get(be, server string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byName[be][server]
}
