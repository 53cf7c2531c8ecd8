package synapse

import (
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// use_nerve_weights: off (Airbnb's JSON default) drops a record's weight
// and keeps synctl's; on keeps the record's.
func TestRecordWeightsInBuild(t *testing.T) {
	for _, tc := range []struct {
		file     string
		want     int // -1: no weight
		override bool
	}{
		{"synapse.conf.json", -1, false},
		{"synapse.conf.json", 9, true},
		{"synapse.yaml", 5, false},
	} {
		body := airbnbJSON("", "")
		if tc.file == "synapse.yaml" {
			body = "haproxy: {do_writes: false, do_reloads: false, do_socket: false}\nservices:\n  web:\n    discovery: {method: zookeeper, hosts: [127.0.0.1:2181], path: /services/web}\n    haproxy: {port: 3000}\n"
		}
		cfg, err := loadConfig(t, tc.file, body)
		if err != nil {
			t.Fatal(err)
		}
		w := 5
		sets := map[string][]registry.Instance{"web": {{Host: "10.0.0.1", Port: 80, Weight: &w}}}
		var ovr registry.OverrideSet
		if tc.override {
			nine := 9
			ovr.Overrides = []registry.Override{{Target: "10.0.0.1", State: registry.StateReady, Weight: &nine, At: time.Now()}}
		}
		active, _ := activeOverrides(ovr, time.Now())
		st, _ := build(buildInput{services: cfg.Services, recordWeights: cfg.RecordWeights(), sets: sets, known: map[string]bool{"web": true}, heard: map[string]bool{"web": true}, active: active}, nil, allDirty())
		got := -1
		if b := st.Services.Get("web").Backends[0]; b.Weight != nil {
			got = *b.Weight
		}
		if got != tc.want {
			t.Errorf("%s override=%v: weight %d, want %d", tc.file, tc.override, got, tc.want)
		}
	}
}
