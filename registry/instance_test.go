package registry

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func intp(n int) *int { return &n }

// manyKeys is `"k0":0,"k1":0,…` with n keys.
func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":0`, i)
	}
	return b.String()
}

func TestEncodeIsNerveJSON(t *testing.T) {
	for _, tc := range []struct {
		in   Instance
		want string
	}{
		{Instance{Host: "10.0.0.5", Port: 8080}, `{"host":"10.0.0.5","port":8080}`},
		{Instance{Host: "10.0.0.5", Port: 8080, Name: "i-abc", Weight: intp(10), HAProxyServerOptions: "backup", Labels: map[string]string{"az": "us-1a"}},
			`{"host":"10.0.0.5","port":8080,"name":"i-abc","weight":10,"haproxy_server_options":"backup","labels":{"az":"us-1a"}}`},
		{Instance{Host: "10.0.0.5", Port: 1, Weight: intp(0)}, `{"host":"10.0.0.5","port":1,"weight":0}`},
		{Instance{Host: "web-1.example.com", Port: 443, Labels: map[string]string{"note": "a&b<c>"}},
			`{"host":"web-1.example.com","port":443,"labels":{"note":"a&b<c>"}}`},
	} {
		got, err := tc.in.Encode()
		if err != nil {
			t.Errorf("Encode(%+v): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("Encode(%+v) =\n %s\nwant\n %s", tc.in, got, tc.want)
		}
		back, err := Decode(got, DecodeOptions{})
		if err != nil || !back.Equal(tc.in) {
			t.Errorf("Decode(Encode(%+v)) = %+v, %v", tc.in, back, err)
		}
	}
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		opts       DecodeOptions
		want       Instance
	}{
		{"nerve", `{"host":"10.0.0.5","port":8080,"name":"i-abc","weight":10,"haproxy_server_options":"backup","labels":{"az":"us-1a"}}`, DecodeOptions{},
			Instance{Host: "10.0.0.5", Port: 8080, Name: "i-abc", Weight: intp(10), HAProxyServerOptions: "backup", Labels: map[string]string{"az": "us-1a"}}},
		{"unknown keys ignored", `{"host":"h1","port":80,"future":{"x":1}}`, DecodeOptions{}, Instance{Host: "h1", Port: 80}},
		{"port as string", `{"host":"h1","port":"80"}`, DecodeOptions{}, Instance{Host: "h1", Port: 80}},
		{"null weight", `{"host":"h1","port":80,"weight":null}`, DecodeOptions{}, Instance{Host: "h1", Port: 80}},
		{"ipv6", `{"host":"2001:db8::1","port":80}`, DecodeOptions{}, Instance{Host: "2001:db8::1", Port: 80}},
		{"same key in different objects", `{"host":"h1","port":80,"labels":{"host":"x","port":"1"},"x":{"host":1},"y":[{"a":1},{"a":2}]}`, DecodeOptions{},
			Instance{Host: "h1", Port: 80, Labels: map[string]string{"host": "x", "port": "1"}}},
		{"label keys differing in case", `{"host":"h1","port":80,"labels":{"az":"a","AZ":"b"}}`, DecodeOptions{},
			Instance{Host: "h1", Port: 80, Labels: map[string]string{"az": "a", "AZ": "b"}}},
		{"serverset", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"additionalEndpoints":{"admin":{"host":"10.1.1.1","port":31001}},"status":"ALIVE","shard":3}`, DecodeOptions{},
			Instance{Host: "10.1.1.1", Port: 31000, Name: "3"}},
		// Airbnb's synapse names a member by its shard: shard 0 is "0"
		// (Ruby's 0 is true), giving the server name 0_10.1.1.1:31000.
		{"serverset shard 0", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"ALIVE","shard":0}`, DecodeOptions{},
			Instance{Host: "10.1.1.1", Port: 31000, Name: "0"}},
		{"serverset endpoint", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"additionalEndpoints":{"admin":{"host":"10.1.1.1","port":31001}},"status":"ALIVE"}`, DecodeOptions{Endpoint: "admin"},
			Instance{Host: "10.1.1.1", Port: 31001}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.data), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	big := `{"host":"h","port":1,"labels":{"x":"` + strings.Repeat("a", MaxRecordSize) + `"}}`
	for _, tc := range []struct{ name, data, want string }{
		{"not json", `not json`, "not a JSON object"},
		{"array", `[1,2]`, "not a JSON object"},
		{"trailing data", `{"host":"h","port":1} {"host":"evil","port":2}`, "after its JSON object"},
		{"trailing brace", `{"host":"h","port":1}}`, "after its JSON object"},
		{"trailing bracket", `{"host":"h","port":1} ]`, "after its JSON object"},
		{"no host", `{"port":80}`, `"host"`},
		{"no port", `{"host":"h1"}`, `"port"`},
		{"port range", `{"host":"h1","port":70000}`, "port"},
		{"port zero", `{"host":"h1","port":0}`, "port"},
		{"port float", `{"host":"h1","port":80.5}`, "port"},
		{"port huge", `{"host":"h1","port":99999999999999999999}`, "port"},
		{"weight range", `{"host":"h1","port":80,"weight":257}`, "weight"},
		{"weight negative", `{"host":"h1","port":80,"weight":-1}`, "weight"},
		{"host newline", `{"host":"h1\nserver evil 1.2.3.4:80","port":80}`, "host"},
		{"host hash", `{"host":"h1#","port":80}`, "host"},
		{"host space", `{"host":"h 1","port":80}`, "host"},
		{"host zone", `{"host":"fe80::1%eth0","port":80}`, "zone"},
		{"host empty", `{"host":"","port":80}`, "host"},
		{"name newline", `{"host":"h1","port":80,"name":"a\nb"}`, "name"},
		{"name space", `{"host":"h1","port":80,"name":"a b"}`, "name"},
		{"options injection", `{"host":"h1","port":80,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`, "haproxy_server_options"},
		{"options unknown keyword", `{"host":"h1","port":80,"haproxy_server_options":"check redir http://evil"}`, "redir"},
		{"options comment", `{"host":"h1","port":80,"haproxy_server_options":"check # x"}`, "#"},
		{"options missing arg", `{"host":"h1","port":80,"haproxy_server_options":"inter"}`, "inter"},
		{"options bad duration", `{"host":"h1","port":80,"haproxy_server_options":"inter 2y"}`, "inter"},
		{"options bad enum", `{"host":"h1","port":80,"haproxy_server_options":"observe layer9"}`, "observe"},
		{"options bad token", `{"host":"h1","port":80,"haproxy_server_options":"sni \"x;y\""}`, "sni"},
		{"label key", `{"host":"h1","port":80,"labels":{"a b":"x"}}`, "labels"},
		// A record may not make HAProxy open files, enter namespaces,
		// follow another server, sit in config maintenance or carry a
		// second weight.
		{"options crt", `{"host":"h1","port":80,"haproxy_server_options":"ssl crt /etc/shadow"}`, `"crt" is not allowed in a record`},
		{"options ca-file", `{"host":"h1","port":80,"haproxy_server_options":"ssl verify required ca-file /root/x.pem"}`, `"ca-file" is not allowed in a record`},
		{"options crl-file", `{"host":"h1","port":80,"haproxy_server_options":"ssl crl-file /x"}`, `"crl-file" is not allowed in a record`},
		{"options namespace", `{"host":"h1","port":80,"haproxy_server_options":"namespace ../.."}`, `"namespace" is not allowed in a record`},
		{"options track", `{"host":"h1","port":80,"haproxy_server_options":"check track nosuch/x"}`, `"track" is not allowed in a record`},
		{"options disabled", `{"host":"h1","port":80,"haproxy_server_options":"check disabled"}`, `"disabled" is not allowed in a record`},
		{"options sni env", `{"host":"h1","port":80,"haproxy_server_options":"ssl sni env(AWS_SECRET_ACCESS_KEY)"}`, "sni"},
		{"options sni map file", `{"host":"h1","port":80,"haproxy_server_options":"ssl sni req.hdr(host),map(/etc/shadow)"}`, "only the converter lower"},
		{"options sni str not a name", `{"host":"h1","port":80,"haproxy_server_options":"ssl sni str(a/b)"}`, "sni"},
		{"options weight", `{"host":"h1","port":80,"weight":10,"haproxy_server_options":"weight 200"}`, `"weight" is not allowed in a record`},
		// Two copies of a key: readers disagree on which one wins.
		{"duplicate host", `{"host":"10.0.0.5","port":80,"host":"6.6.6.6"}`, `host: key "host" appears twice`},
		{"duplicate port", `{"host":"h1","port":80,"port":81}`, `port: key "port" appears twice`},
		{"duplicate host escaped", `{"host":"10.0.0.5","port":80,"\u0068ost":"6.6.6.6"}`, `key "host" appears twice`},
		{"duplicate among many keys", `{"host":"h1","port":80,` + manyKeys(40) + `,"k7":0}`, `k7: key "k7" appears twice`},
		{"duplicate host other case", `{"host":"10.0.0.5","port":80,"HOST":"6.6.6.6"}`, `key "HOST" appears twice`},
		{"duplicate name other case", `{"name":"a","port":80,"host":"h","nAme":"b"}`, `key "nAme" appears twice`},
		{"duplicate status folded long s", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"DEAD","ſtatus":"ALIVE"}`, `appears twice`},
		{"duplicate options", `{"host":"h1","port":80,"haproxy_server_options":"backup","haproxy_server_options":"check"}`, "haproxy_server_options: key"},
		{"duplicate label", `{"host":"h1","port":80,"labels":{"az":"a","az":"b"}}`, `labels.az: key "az" appears twice`},
		{"duplicate unknown key", `{"host":"h1","port":80,"future":1,"future":2}`, `future: key "future" appears twice`},
		{"duplicate deep in unknown", `{"host":"h1","port":80,"x":[{"a":1},{"b":{"c":1,"c":2}}]}`, `x[].b.c: key "c" appears twice`},
		{"duplicate endpoint host", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000,"host":"6.6.6.6"},"status":"ALIVE"}`, `serviceEndpoint.host: key "host" appears twice`},
		{"duplicate endpoint name", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"additionalEndpoints":{"a":{"host":"h","port":1},"a":{"host":"i","port":1}},"status":"ALIVE"}`, `additionalEndpoints.a: key "a" appears twice`},
		{"duplicate status", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"DEAD","status":"ALIVE"}`, `status: key "status" appears twice`},
		{"label value newline", `{"host":"h1","port":80,"labels":{"a":"x\ny"}}`, "labels.a"},
		{"label value NUL", `{"host":"h1","port":80,"labels":{"a":"x\u0000y"}}`, "labels.a"},
		{"label not string", `{"host":"h1","port":80,"labels":{"a":1}}`, "JSON"},
		{"too big", big, "byte limit"},
		{"serverset dead", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"DEAD"}`, "ALIVE"},
		{"serverset missing endpoint", `{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"ALIVE"}`, "additionalEndpoints"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := DecodeOptions{}
			if tc.name == "serverset missing endpoint" {
				opts.Endpoint = "http"
			}
			_, err := Decode([]byte(tc.data), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Decode(%.60q) = %v, want an error mentioning %q", tc.data, err, tc.want)
			}
		})
	}
	if _, err := Decode([]byte(`{"serviceEndpoint":{"host":"h","port":1},"status":"STOPPING"}`), DecodeOptions{}); !errors.Is(err, ErrNotAlive) {
		t.Errorf("a STOPPING member: %v, want ErrNotAlive", err)
	}
}

func TestServerOptionsAllowed(t *testing.T) {
	for _, opts := range []string{
		"", "backup", "check inter 2s rise 3 fall 2", "maxconn 100 slowstart 30s", "enabled",
		"on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions",
		"check-ssl ssl verify none sni req.hdr(host) alpn h2,http/1.1",
		"ssl sni str(api.example.com)", "ssl sni ssl_fc_sni,lower", "ssl sni hdr(Host)",
		"send-proxy-v2 observe layer7 error-limit 10 on-error mark-down",
		"  check\tinter 500ms  ",
	} {
		if err := ValidateServerOptions(opts); err != nil {
			t.Errorf("ValidateServerOptions(%q) = %v", opts, err)
		}
	}
}

func TestChildName(t *testing.T) {
	rec, err := Instance{Host: "10.0.0.5", Port: 8080, Name: "i-abc"}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	name := EncodeChildName(rec) + "0000000042"
	got, ok, err := DecodeChildName(name, DecodeOptions{})
	if !ok || err != nil || got.Name != "i-abc" || got.Port != 8080 {
		t.Fatalf("DecodeChildName(%q) = %+v, %v, %v", name, got, ok, err)
	}
	if _, ok, _ := DecodeChildName("i-abc_0000000042", DecodeOptions{}); ok {
		t.Error("a plain child name was taken as path-encoded")
	}
	for _, bad := range []string{"base64_x_abc_1", "base64_999_abc_1", "base64_4_!!!!_1", "base64_8_" + "bm90IGpz" + "_1"} {
		if _, ok, err := DecodeChildName(bad, DecodeOptions{}); !ok || err == nil {
			t.Errorf("DecodeChildName(%q) = ok %v, err %v; want a path-encoding error", bad, ok, err)
		}
	}
}

func TestDedupeAndEqualSets(t *testing.T) {
	a := []Instance{{Host: "h2", Port: 1, Name: "b"}, {Host: "h1", Port: 1, Name: "a", Weight: intp(5)}, {Host: "h1", Port: 1, Name: "a"}}
	got := Dedupe(a)
	if len(got) != 2 || got[0].Name != "a" || got[0].Weight == nil {
		t.Fatalf("Dedupe = %+v; want a (the first, weighted) and b", got)
	}
	if !EqualSets(got, []Instance{{Host: "h1", Port: 1, Name: "a", Weight: intp(5)}, {Host: "h2", Port: 1, Name: "b"}}) {
		t.Error("EqualSets: equal sets differ")
	}
	if EqualSets(got, got[:1]) {
		t.Error("EqualSets: different lengths equal")
	}
}

func TestOverride(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	later := now.Add(time.Hour)
	o := Override{Target: "10.0.0.5", State: StateDrain, Services: []string{"web", "api"}, Reason: "deploy", By: "ops@h", At: now, ExpiresAt: &later}
	if o.Key() != "10.0.0.5@api,web" {
		t.Errorf("Key = %q", o.Key())
	}
	if o.Services[0] != "web" {
		t.Error("Key sorted the caller's slice")
	}
	data, err := o.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeOverride(data)
	if err != nil || back.Key() != o.Key() || !back.ExpiresAt.Equal(later) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for _, tc := range []struct {
		svc  string
		in   Instance
		want bool
	}{
		{"web", Instance{Host: "10.0.0.5", Port: 80}, true},
		{"web", Instance{Host: "10.0.0.6", Port: 80, Name: "10.0.0.5"}, true},
		{"db", Instance{Host: "10.0.0.5", Port: 80}, false},
		{"web", Instance{Host: "10.0.0.6", Port: 80}, false},
	} {
		if got := o.Matches(tc.svc, tc.in); got != tc.want {
			t.Errorf("Matches(%s, %+v) = %v", tc.svc, tc.in, got)
		}
	}
	if !o.Active(now) || o.Active(later) {
		t.Error("Active: wrong around the expiry")
	}
	for _, tc := range []struct {
		data, want string
	}{
		{`{"target":"h","state":"off","at":"2026-11-22T03:00:00Z"}`, "state"},
		{`{"target":"h","state":"drain"}`, "at"},
		{`{"target":"h x","state":"drain","at":"2026-11-22T03:00:00Z"}`, "target"},
		{`{"target":"h","state":"drain","at":"2026-11-22T03:00:00Z","weight":300}`, "weight"},
		{`{"target":"h","state":"drain","at":"2026-11-22T03:00:00Z","services":["a\nb"]}`, "services[0]"},
		{`{"target":"h","state":"drain","at":"2026-11-22T03:00:00Z","extra":1}`, "extra"},
		{`{"target":"h","state":"drain","at":"yesterday"}`, "override"},
	} {
		if _, err := DecodeOverride([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeOverride(%s) = %v, want an error naming %s", tc.data, err, tc.want)
		}
	}
}

func TestEqualSetsComparesRegistrationOrder(t *testing.T) {
	a := Instance{Host: "10.0.0.1", Port: 80, Name: "a", Seq: 5}
	again := a
	again.Seq = 9 // the same record, registered again
	if EqualSets([]Instance{a}, []Instance{again}) {
		t.Error("a set whose record was registered again is equal to the old one: leader_election would miss the new order")
	}
	if !EqualSets([]Instance{a}, []Instance{a.Clone()}) {
		t.Error("a set is not equal to its copy")
	}
}

// CompareIDs orders as the IDs' strings do, IPv6 brackets, names and ports
// of every length included, and allocates nothing: sets are sorted by ID on
// every watch event.
func TestCompareIDs(t *testing.T) {
	var ins []Instance
	for _, name := range []string{"", "a", "a@b", "web-1", "ab", strings.Repeat("n", 120)} {
		for _, host := range []string{"10.0.0.1", "10.0.0.10", "::1", "fe80::1", "a", "a:"} {
			for _, port := range []int{1, 9, 80, 8080, 65535} {
				ins = append(ins, Instance{Name: name, Host: host, Port: port})
			}
		}
	}
	for _, a := range ins {
		for _, b := range ins {
			if got, want := CompareIDs(a, b), strings.Compare(a.ID(), b.ID()); got != want {
				t.Fatalf("CompareIDs(%q, %q) = %d, want %d", a.ID(), b.ID(), got, want)
			}
		}
	}
	set := make([]Instance, 10)
	for i := range set {
		set[i] = Instance{Name: fmt.Sprintf("i%02d", 9-i), Host: "127.0.0.1", Port: 20000 + i}
	}
	work := make([]Instance, len(set))
	if n := testing.AllocsPerRun(100, func() {
		copy(work, set)
		Dedupe(work)
	}); n != 0 {
		t.Errorf("Dedupe of 10 records: %v allocations, want 0", n)
	}
}
