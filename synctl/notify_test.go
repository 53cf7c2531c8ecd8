package synctl

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/registry/registrytest"
)

// receiver is a local webhook endpoint that records what it is told.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	fails  int           // answer 503 this many times first
	hold   chan struct{} // when set, hold every request until closed
}

func startReceiver(t *testing.T, fails int, hold chan struct{}) *receiver {
	r := &receiver{fails: fails, hold: hold}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if r.hold != nil {
			<-r.hold
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fails > 0 {
			r.fails--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		r.bodies = append(r.bodies, string(body))
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

func TestWebhooks(t *testing.T) {
	budget := notifyBudget
	notifyBudget = 3 * time.Second
	t.Cleanup(func() { notifyBudget = budget })
	w := newWorld(t, "zookeeper")
	ok := startReceiver(t, 0, nil)
	flaky := startReceiver(t, 2, nil) // 503 twice, then fine: retried
	slack := startReceiver(t, 0, nil)
	// A receiver that is down: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/hook"
	ln.Close()

	start := time.Now()
	code, out, errs := w.synctl(t, "drain", "127.0.0.12", "--reason", "deploy 7", "--wait", "--timeout", "10s",
		"--webhook", ok.URL, "--webhook", "json="+flaky.URL, "--webhook", "slack="+slack.URL, "--webhook", down)
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("drain with webhooks: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, "warning: webhook "+down) || !strings.Contains(errs, "the change itself is done") {
		t.Errorf("a receiver that is down is not reported:\n%s", errs)
	}
	if took > notifyBudget+5*time.Second {
		t.Errorf("a down receiver held the command %v", took)
	}
	for name, r := range map[string]*receiver{"ok": ok, "flaky": flaky} {
		got := r.got()
		if len(got) != 2 {
			t.Fatalf("%s receiver got %d posts, want written + applied: %q", name, len(got), got)
		}
		var written, applied event
		if json.Unmarshal([]byte(got[0]), &written) != nil || json.Unmarshal([]byte(got[1]), &applied) != nil {
			t.Fatalf("%s: not JSON: %q", name, got)
		}
		if written.Event == "applied" { // the two posts race: order them
			written, applied = applied, written
		}
		if written.Event != "written" || written.Action != "drain" || written.By != "tester@test" || written.Reason != "deploy 7" ||
			len(written.Plan) != 1 || written.Plan[0].ReadyAfter != 2 || !strings.Contains(written.Text, "127.0.0.12") {
			t.Errorf("%s: written event %+v", name, written)
		}
		if applied.Event != "applied" || len(applied.Acked) != 2 {
			t.Errorf("%s: applied event %+v", name, applied)
		}
	}
	for _, b := range slack.got() {
		var m map[string]string
		if json.Unmarshal([]byte(b), &m) != nil || len(m) != 1 || !strings.Contains(m["text"], "drain 127.0.0.12") {
			t.Errorf("slack body %q", b)
		}
	}

	// A slow receiver: the change is written (and applied) while the
	// receiver still holds the post; the command ends once it answers.
	hold := make(chan struct{})
	slow := startReceiver(t, 0, hold)
	done := make(chan int)
	go func() {
		code, _, _ := w.synctl(t, "add-to-lb", "127.0.0.12", "--webhook", slow.URL)
		done <- code
	}()
	registrytest.Eventually(t, 10*time.Second, "override removed while the webhook is held", func() bool {
		return len(w.overrides(t)) == 0
	})
	close(hold)
	if code := <-done; code != 0 {
		t.Errorf("add-to-lb with a slow webhook: exit %d", code)
	}
	if got := slow.got(); len(got) != 1 || !strings.Contains(got[0], `"action":"add-to-lb"`) {
		t.Errorf("slow receiver got %q", got)
	}
}

func TestWebhookConfig(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    webhook
		wantErr bool
	}{
		{"http://h/x", webhook{URL: "http://h/x", Format: "json"}, false},
		{"slack=https://h/x", webhook{URL: "https://h/x", Format: "slack"}, false},
		{"json=http://h/x?a=b", webhook{URL: "http://h/x?a=b", Format: "json"}, false},
		{"ftp://h/x", webhook{}, true},
		{"slack=", webhook{}, true},
	} {
		got, err := parseWebhook(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parseWebhook(%q) = %+v, %v", tt.in, got, err)
		}
	}
}
