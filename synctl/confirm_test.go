package synctl

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/registry/registrytest"
)

// A forced drain of 2 of 3 hosts is more than the synapses' panic
// threshold (50 %) lets out at once: each holds one back, and synctl
// status names it. synctl confirm (with a reason, in the audit trail) lets
// it go on every synapse; add-to-lb later clears the drains and leaves the
// confirmation alone.
func TestConfirmLiftsPanicHold(t *testing.T) {
	w := newWorld(t, "etcd")
	if code, _, errOut := w.synctl(t, "confirm", "web"); code != ExitUsage || !strings.Contains(errOut, "--reason is required") {
		t.Errorf("confirm without --reason: exit %d: %s", code, errOut)
	}
	if code, _, errOut := w.synctl(t, "confirm", "nosuch", "--reason", "x"); code != ExitFailed || !strings.Contains(errOut, `unknown service "nosuch"`) {
		t.Errorf("confirm of an unknown service: exit %d: %s", code, errOut)
	}
	if code, out, errOut := w.synctl(t, "drain", "127.0.0.11,127.0.0.12", "--force", "--reason", "big deploy", "--wait"); code != 0 || !strings.Contains(errOut, "synctl confirm SERVICE") {
		t.Fatalf("drain --force: exit %d (or no word of the panic threshold): %s%s", code, out, errOut)
	}
	for _, p := range w.pairs {
		p.WaitServers(t, "web", map[string]int{"a": 0, "b": 8, "c": 0}, 10*time.Second) // a held (the first by name)
	}
	registrytest.Eventually(t, 10*time.Second, "synctl status shows both synapses holding a", func() bool {
		_, out, _ := w.synctl(t, "status")
		return strings.Count(out, "HOLDING web/a_") == 2 && strings.Contains(out, "synctl confirm web")
	})
	code, out, errOut := w.synctl(t, "confirm", "web", "--reason", "deploy is intended", "--for", "5m", "--wait")
	if code != 0 {
		t.Fatalf("confirm: exit %d: %s%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "letting go 2 held removals") {
		t.Errorf("confirm did not name what it lets go: %s", errOut)
	}
	for _, p := range w.pairs {
		p.WaitServers(t, "web", map[string]int{"a": 8, "b": 8, "c": 0}, 10*time.Second)
	}
	var confirm *registry.Override
	for _, o := range w.overrides(t) {
		if o.State == registry.StateConfirm {
			confirm = &o
		}
	}
	if confirm == nil || confirm.Key() != "web@web~confirm" || confirm.ExpiresAt == nil || confirm.ExpiresAt.Sub(confirm.At) != 5*time.Minute || confirm.By != "tester@test" {
		t.Fatalf("confirmation record: %+v", confirm)
	}
	hist, err := w.reg.History(context.Background(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hist, func(h registry.HistoryEntry) bool {
		return h.Action == "confirm" && h.Reason == "deploy is intended" && slices.Equal(h.Services, []string{"web"}) && h.ExpiresAt != nil
	}) {
		t.Errorf("no confirm in the audit trail: %+v", hist)
	}
	if _, out, _ := w.synctl(t, "status"); !strings.Contains(out, "removals in web confirmed by tester@test") || strings.Contains(out, "HOLDING") {
		t.Errorf("status after the confirmation:\n%s", out)
	}
	// add-to-lb clears the drains, not the confirmation (it holds nothing out).
	if code, out, errOut := w.synctl(t, "add-to-lb", "127.0.0.11,127.0.0.12", "--wait"); code != 0 {
		t.Fatalf("add-to-lb: exit %d: %s%s", code, out, errOut)
	}
	keys := []string{}
	for _, o := range w.overrides(t) {
		keys = append(keys, o.Key())
	}
	if !slices.Equal(keys, []string{"web@web~confirm"}) {
		t.Errorf("overrides after add-to-lb: %v", keys)
	}
	for _, p := range w.pairs {
		p.WaitServers(t, "web", map[string]int{"a": 0, "b": 0, "c": 0}, 10*time.Second)
	}
}
