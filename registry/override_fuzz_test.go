package registry

import (
	"testing"
)

// FuzzDecodeOverride: whatever an override record holds, DecodeOverride
// refuses it or returns one that validates, round-trips, has a key that is
// one path element, and, if it is a confirmation, matches no server and
// expires.
func FuzzDecodeOverride(f *testing.F) {
	for _, seed := range []string{
		`{"target":"10.0.0.5","state":"drain","reason":"deploy","by":"op","at":"2026-01-01T00:00:00Z"}`,
		`{"target":"i-1","state":"ready","weight":0,"services":["web","api"],"at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T01:00:00Z"}`,
		`{"target":"web","state":"confirm","services":["web"],"reason":"scale-in","at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:10:00Z"}`,
		`{"target":"web","state":"confirm","at":"2026-01-01T00:00:00Z"}`,
		`{"target":"../x","state":"maint","at":"2026-01-01T00:00:00Z"}`,
		`{"target":"a/b","state":"drain","services":["x\ny"],"at":"2026-01-01T00:00:00Z"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := DecodeOverride(data)
		if err != nil {
			return
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("decoded but invalid: %v", err)
		}
		k := o.Key()
		for _, c := range k {
			if c == '/' || c < 0x20 || c == 0x7f {
				t.Fatalf("key %q is not one path element", k)
			}
		}
		if k == "" || k == "." || k == ".." {
			t.Fatalf("key %q", k)
		}
		if o.State == StateConfirm {
			if o.ExpiresAt == nil || len(o.Services) == 0 {
				t.Fatalf("a confirmation without expiry or services: %+v", o)
			}
			if o.Matches(o.Services[0], Instance{Host: o.Target, Port: 1, Name: o.Target}) {
				t.Fatal("a confirmation matches a server")
			}
		}
		enc, err := o.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeOverride(enc)
		if err != nil || back.Key() != k {
			t.Fatalf("round trip: %s → %+v, %v", enc, back, err)
		}
	})
}
