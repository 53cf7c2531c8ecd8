package registry

import (
	"strings"
	"testing"
)

// FuzzDecode checks that whatever a registry holds, Decode either refuses it
// or returns an instance whose every field is safe to put in haproxy.cfg,
// and that it never panics.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"host":"10.0.0.5","port":8080,"name":"i-abc","weight":10,"haproxy_server_options":"backup","labels":{"az":"us-1a"}}`,
		`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"check\nserver evil 6.6.6.6:80"}`,
		`{"host":"10.0.0.5\n  server evil 6.6.6.6:80","port":8080}`,
		`{"host":"10.0.0.5","port":8080,"name":"x\r\nbackend evil"}`,
		`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"check # comment"}`,
		`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"check\u2028server evil"}`,
		`{"host":"10.0.0.5","port":8080,"labels":{"k\n":"v"}}`,
		`{"host":"10.0.0.5","port":"8080"}`,
		`{"host":"::1","port":1}`,
		`{"serviceEndpoint":{"host":"10.1.1.1","port":31000},"status":"ALIVE","shard":0}`,
		`{"host":"h","port":1}{"host":"evil","port":2}`,
		`not json`,
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := Decode(data, DecodeOptions{})
		if err != nil {
			return
		}
		for field, v := range map[string]string{"host": in.Host, "name": in.Name, "options": in.HAProxyServerOptions} {
			if strings.ContainsAny(v, "\n\r\x00#") {
				t.Fatalf("%s %q passed validation", field, v)
			}
		}
		for k, v := range in.Labels {
			if strings.ContainsAny(k+v, "\n\r\x00#") {
				t.Fatalf("label %q=%q passed validation", k, v)
			}
		}
		if in.Port < 1 || in.Port > 65535 {
			t.Fatalf("port %d passed validation", in.Port)
		}
		enc, err := in.Encode()
		if err != nil {
			t.Fatalf("a decoded instance does not encode: %v", err)
		}
		back, err := Decode(enc, DecodeOptions{})
		if err != nil || !back.Equal(in) {
			t.Fatalf("round trip: %+v → %s → %+v, %v", in, enc, back, err)
		}
	})
}

// FuzzDecodeChildName checks the path-encoded child names likewise.
func FuzzDecodeChildName(f *testing.F) {
	rec, _ := Instance{Host: "10.0.0.5", Port: 8080, Name: "i-abc"}.Encode()
	f.Add(EncodeChildName(rec) + "0000000001")
	f.Add("base64_12_eyJob3N0IjoiaCJ9_0000000001")
	f.Add("base64_-1__")
	f.Add("i-abc_0000000001")
	f.Fuzz(func(t *testing.T, name string) {
		in, ok, err := DecodeChildName(name, DecodeOptions{})
		if ok && err == nil {
			if err := in.Validate(); err != nil {
				t.Fatalf("decoded child name gives an invalid instance: %v", err)
			}
		}
	})
}
