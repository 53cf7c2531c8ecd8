package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
		`{"host":"10.0.0.5","port":8080,"host":"6.6.6.6"}`,
		`{"host":"10.0.0.5","port":8080,"HOST":"6.6.6.6"}`,
		`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"ssl crt /etc/shadow track a/b disabled weight 1"}`,
		`{"host":"10.0.0.5","port":8080,"haproxy_server_options":"sni disabled check"}`,
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
		for toks, i := strings.Fields(in.HAProxyServerOptions), 0; i < len(toks); i++ {
			if _, ok := operatorOnlyKeywords[toks[i]]; ok {
				t.Fatalf("options %q with operator-only %q passed validation", in.HAProxyServerOptions, toks[i])
			}
			if serverKeywords[toks[i]].kind != argNone {
				i++ // its argument
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

// duplicateKeysReference is checkDuplicateKeys written the slow, obvious
// way (a json.Decoder token walk): the oracle for FuzzDuplicateKeys.
func duplicateKeysReference(data []byte) error {
	type frame struct {
		object, wantKey, exact bool
		path, lastKey          string
		keys                   map[string]bool
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if tok == json.Delim('}') {
				stack = stack[:len(stack)-1]
				continue
			}
			key := tok.(string)
			k := key
			if !top.exact {
				k = foldKey(key)
			}
			if top.keys[k] {
				return fmt.Errorf("%s: key %.40q appears twice", keyPath(top.path, key), key)
			}
			top.keys[k], top.lastKey, top.wantKey = true, key, false
			continue
		}
		path := ""
		if top != nil {
			if top.object {
				path = keyPath(top.path, top.lastKey)
				top.wantKey = true
			} else {
				path = top.path + "[]"
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true, path: path, keys: map[string]bool{},
				exact: path == "labels" || path == "additionalEndpoints"})
		case json.Delim('['):
			stack = append(stack, &frame{path: path})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// FuzzDuplicateKeys checks the fast scan against the token walk on every
// valid JSON value.
func FuzzDuplicateKeys(f *testing.F) {
	for _, seed := range []string{
		`{"host":"a","port":1,"host":"b"}`,
		`{"host":"a","HOST":"b"}`,
		`{"a":{"b":[{"c":1,"c":2}]}}`,
		`{"labels":{"a":"1","A":"2"},"Labels":{}}`,
		`{"additionalEndpoints":{"x":{"host":"h","Host":"i"}}}`,
		`{"\u0068ost":1,"host":2}`,
		`{"a\"b":1,"a\\":2,"a\"b":3}`,
		`[{"a":1},{"a":1}]`,
		`"just a string"`,
		`{"ſtatus":1,"status":2}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		got, want := checkDuplicateKeys(data), duplicateKeysReference(data)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("checkDuplicateKeys(%q) = %v; the token walk says %v", data, got, want)
		}
	})
}
