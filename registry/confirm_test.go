package registry

import (
	"strings"
	"testing"
	"time"
)

// A confirmation (synctl confirm) is an override of its own kind: it names
// services, expires, carries no weight, matches no server, and has a key
// no drain can have.
func TestConfirmOverride(t *testing.T) {
	at := time.Unix(1_000_000, 0).UTC()
	exp := at.Add(10 * time.Minute)
	w := 3
	ok := Override{Target: "web", State: StateConfirm, Services: []string{"web"}, Reason: "scale-in", By: "op", At: at, ExpiresAt: &exp}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid confirmation refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Override)
		want string
	}{
		{"no services", func(o *Override) { o.Services = nil }, "services"},
		{"no expiry", func(o *Override) { o.ExpiresAt = nil }, "expires_at"},
		{"a weight", func(o *Override) { o.Weight = &w }, "weight"},
	} {
		o := ok
		tc.edit(&o)
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.name, err, tc.want)
		}
	}
	if k := ok.Key(); k != "web@web~confirm" {
		t.Errorf("key %q", k)
	}
	drain := Override{Target: "web", State: StateDrain, Services: []string{"web"}, At: at}
	if drain.Key() == ok.Key() {
		t.Error("a drain of instance web in service web has the confirmation's key")
	}
	// A backend whose host or name is the service's name is not matched.
	if ok.Matches("web", Instance{Host: "web", Port: 80, Name: "web"}) {
		t.Error("a confirmation matches a server")
	}
	data, err := ok.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeOverride(data)
	if err != nil || back.Key() != ok.Key() || back.State != StateConfirm {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	if _, err := DecodeOverride([]byte(`{"target":"web","state":"confirmed","services":["web"],"at":"2026-01-01T00:00:00Z"}`)); err == nil {
		t.Error("an unknown state decoded")
	}
}

// An ack names the removals its synapse holds back, bounded and validated.
func TestAckHeld(t *testing.T) {
	a := Ack{ID: "s1", Held: []string{"web/b2_10.0.0.2:80"}}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	a.Held = make([]string, MaxAckQuarantined+1)
	for i := range a.Held {
		a.Held[i] = "web/x"
	}
	if err := a.Validate(); err == nil {
		t.Error("too many held entries accepted")
	}
	a.Held = []string{"web/x\nserver evil"}
	if err := a.Validate(); err == nil {
		t.Error("a control character in held accepted")
	}
}

// An ack from a newer synapse, with a key this version does not know, is
// read (an older synctl must not take an upgraded synapse for dead); its
// known fields are checked as ever, and an override stays strict.
func TestAckFromANewerSynapseDecodes(t *testing.T) {
	a, err := DecodeAck([]byte(`{"id":"s1","revision":7,"at":"2026-12-02T04:00:00Z","services_digest":"ab12","future":{"x":[1,2]}}`))
	if err != nil || a.ID != "s1" || a.Revision != 7 {
		t.Errorf("ack with unknown keys: %+v, %v", a, err)
	}
	for _, bad := range []string{
		`{"id":"s1","revision":-1,"future":1}`,
		`{"id":"bad id","revision":1,"future":1}`,
		`{"id":"s1","revision":1} {"id":"s2"}`,
		`{"id":"s1","revision":"7"}`,
	} {
		if _, err := DecodeAck([]byte(bad)); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
	if _, err := DecodeOverride([]byte(`{"target":"10.0.0.5","state":"drain","at":"2026-12-02T04:00:00Z","future":1}`)); err == nil {
		t.Error("an override with an unknown key decoded")
	}
}
