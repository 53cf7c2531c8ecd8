package haproxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/registry"
)

// FuzzRenderServers: whatever records the registry holds, the rendered
// haproxy.cfg is either without them (a record refused by validation, or a
// host name not resolved yet) or has exactly the servers given: one server
// line each, under its own name and address, and nothing else changed:
// with the server lines taken out, the file is the skeleton, line for line
// (no extra line, section, comment or command).
func FuzzRenderServers(f *testing.F) {
	for _, seed := range [][3]string{
		{`{"host":"10.0.0.5","port":8080,"name":"i-abc","weight":10,"haproxy_server_options":"backup"}`, `{"host":"10.0.0.6","port":8080}`, ``},
		{`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`, `{"host":"10.0.0.5\n  server evil 6.6.6.6:80","port":8080}`, `{"host":"::1","port":1,"name":"v6"}`},
		{`{"host":"10.0.0.5","port":8080,"name":"x\r\nbackend evil"}`, `{"host":"10.0.0.5","port":8080,"haproxy_server_options":"check # comment"}`, `{"host":"10.0.0.5","port":8080,"haproxy_server_options":"check\u2028server evil"}`},
		{`{"host":"web.internal","port":80,"name":"byname"}`, `{"host":"10.0.0.5","port":8080,"name":"dup"}`, `{"host":"10.0.0.5","port":8080,"name":"dup"}`},
		{`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"ssl crt /etc/shadow"}`, `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"ALIVE"}`, `{"host":"::ffff:10.0.0.7","port":9}`},
		{`{"host":"10.0.0.9","port":80,"haproxy_server_options":"backup\ncheck"}`, `{"host":"10.0.0.9","port":81,"haproxy_server_options":"maxconn 5\rcheck"}`, `{"host":"10.0.0.9","port":82,"name":"n","haproxy_server_options":"inter 1s\tcheck"}`},
		{`{"host":"10.0.0.5","port":8080,"name":"a b"}`, `{"host":"10.0.0.5","port":8080,"name":"}\nlisten x"}`, `{"host":"10.0.0.8","port":80,"haproxy_server_options":"inter 2s fall 3 rise 2 maxconn 10"}`},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]), []byte(seed[2]), byte(0b100100))
	}
	svc := &ServiceConfig{Port: 8080, BindAddress: "127.0.0.1", ServerOptions: confutil.StringOrList{"check"}, Listen: confutil.StringOrList{"mode http", "balance roundrobin"}}
	cfg := &Config{ConfigFilePath: "/x/haproxy.cfg", Global: []string{"maxconn 100"}, Defaults: []string{"timeout connect 1s"}, DoSocket: new(bool), DoReloads: new(bool)}
	var p confutil.Problems
	cfg.Finalize(&p)
	svc.Finalize("web", cfg, &p)
	if err := p.Err(""); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, r1, r2, r3 []byte, states byte) {
		g := New(cfg, map[string]*ServiceConfig{"web": svc}, nil, nil)
		var given []generators.Backend
		seen := map[string]bool{}
		for i, rec := range [][]byte{r1, r2, r3} {
			in, err := registry.Decode(rec, registry.DecodeOptions{})
			if err != nil {
				continue // refused
			}
			b := generators.Backend{Instance: in, State: []registry.OverrideState{registry.StateReady, registry.StateDrain, registry.StateMaint, registry.StateReady}[(states>>(2*i))&3]}
			if seen[b.ServerName()] {
				continue // synapse keeps the first of a name
			}
			seen[b.ServerName()] = true
			given = append(given, b)
		}
		generators.SortBackends(given)
		st := generators.State{Services: generators.ServicesOf(map[string]generators.Service{"web": {Backends: given}})}
		full, skel := g.render(st, true), g.render(st, false)

		var rest, servers []string
		for _, l := range strings.Split(full, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "server ") {
				servers = append(servers, l)
			} else {
				rest = append(rest, l)
			}
		}
		if got := strings.Join(rest, "\n"); got != skel {
			t.Fatalf("without its server lines the config is not the skeleton:\n%s\n--- skeleton:\n%s", full, skel)
		}
		if strings.ContainsAny(full, "\r\x00\u2028\u2029\u0085") {
			t.Fatalf("a line break HAProxy might honour in:\n%q", full)
		}
		var want []string
		for _, b := range given {
			a, err := netip.ParseAddr(b.Host)
			if err != nil {
				continue // a host name not looked up: left out (quarantined)
			}
			want = append(want, b.ServerName()+" "+joinAddr(a.String(), b.Port))
		}
		var got []string
		for _, l := range servers {
			f := strings.Fields(l)
			if len(f) < 3 || f[0] != "server" {
				t.Fatalf("server line %q", l)
			}
			got = append(got, f[1]+" "+f[2])
			// The generator's own drain comment is the only '#' allowed;
			// a keyword that opens a section never appears as a parameter.
			for _, tok := range strings.Fields(strings.TrimSuffix(l, drainSuffix))[3:] {
				switch {
				case strings.HasPrefix(tok, "#"), tok == "server", tok == "backend", tok == "listen", tok == "frontend", tok == "global", tok == "defaults":
					t.Fatalf("server line %q carries %q", l, tok)
				}
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("servers %q, want exactly %q\n%s", got, want, full)
		}
	})
}
