package haproxy

import (
	"testing"
	"time"

	"github.com/syncstack/syncstack/generators"
	"github.com/syncstack/syncstack/registry"
)

// With registry.Instance decoding haproxy_server_id, a nerve record's field
// and its `id` option both reach the server's id.
func TestRecordIDFromNerveRecord(t *testing.T) {
	field, err := registry.Decode([]byte(`{"host":"10.0.0.1","port":80,"name":"a","haproxy_server_id":42}`), registry.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opt, err := registry.Decode([]byte(`{"host":"10.0.0.2","port":80,"name":"b","haproxy_server_options":"check id 9"}`), registry.DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := newServerIDs(100, nil, nil)
	bs := []generators.Backend{{Instance: field, State: registry.StateReady}, {Instance: opt, State: registry.StateReady}}
	ids.assign("be", bs, nil, time.Now())
	if a, b := ids.get("be", bs[0].ServerName()), ids.get("be", bs[1].ServerName()); a != 42 || b != 9 {
		t.Errorf("ids %d %d, want 42 9", a, b)
	}
}
