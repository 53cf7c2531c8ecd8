package registry

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// An ack says one of three things about its services: here they are (a
// map), none (an empty map, or no key: a synapse before catalogs held
// them), or "in my catalog" (null). A synapse with 1000 services acks
// ~40 KB while its catalog is not written: it must still be read, or
// synctl takes that synapse for dead.
func TestAckServicesEncoding(t *testing.T) {
	many := map[string]string{}
	for i := range 1000 {
		many[fmt.Sprintf("service-%04d", i)] = fmt.Sprintf("/services/service-%04d", i)
	}
	for _, tc := range []struct {
		name      string
		ack       Ack
		wantJSON  string // a part of the encoding
		inCatalog bool
		services  int
	}{
		{"left to the catalog", Ack{ID: "s1", ServicesInCatalog: true}, `"services":null`, true, 0},
		{"none", Ack{ID: "s1"}, `"services":{}`, false, 0},
		{"named", Ack{ID: "s1", Services: map[string]string{"web": "/services/web"}}, `"services":{"web":"/services/web"}`, false, 1},
		{"1000 named", Ack{ID: "s1", Services: many}, `"service-0999":"/services/service-0999"`, false, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ack.At = time.Now()
			data, err := EncodeAck(tc.ack)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tc.wantJSON) {
				t.Errorf("encoded %.200s, want it to contain %s", data, tc.wantJSON)
			}
			got, err := DecodeAck(data)
			if err != nil {
				t.Fatalf("decoding %d bytes: %v", len(data), err)
			}
			if got.ServicesInCatalog != tc.inCatalog || len(got.Services) != tc.services {
				t.Errorf("decoded: in catalog %v with %d services, want %v with %d", got.ServicesInCatalog, len(got.Services), tc.inCatalog, tc.services)
			}
		})
	}
	// What a synapse before this wrote when it served none: no key.
	if a, err := DecodeAck([]byte(`{"id":"s1","revision":3,"at":"2026-12-02T04:00:00Z"}`)); err != nil || a.ServicesInCatalog || a.Services != nil {
		t.Errorf("an ack without services: %+v, %v; want none, not left to the catalog", a, err)
	}
	if _, err := EncodeAck(Ack{ID: "s1", At: time.Now(), ServicesInCatalog: true, Services: map[string]string{"web": "/w"}}); err == nil {
		t.Error("an ack both naming its services and leaving them to the catalog encoded")
	}
	huge := map[string]string{}
	for i := range 10000 {
		huge[fmt.Sprintf("service-%05d", i)] = "/services/" + strings.Repeat("x", 40)
	}
	if data, err := EncodeAck(Ack{ID: "s1", At: time.Now(), Services: huge}); err == nil {
		t.Errorf("an ack of %d bytes encoded, over MaxAckSize", len(data))
	}
}
