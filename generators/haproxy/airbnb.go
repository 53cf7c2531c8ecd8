package haproxy

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"os"
	"slices"
	"strings"

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
