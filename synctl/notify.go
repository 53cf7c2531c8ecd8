package synctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/registry"
)

// Doing it and telling people are one action: every change synctl makes to
// the fleet is posted to the configured webhooks, once when it is written
// (with its plan) and once when the fleet has applied it (or has not). A
// webhook never blocks or fails the change: posts run beside it, are
// retried with backoff for a bounded time, and a failure is a warning.

// Webhook formats.
const (
	formatJSON  = "json"  // the whole event as JSON
	formatSlack = "slack" // {"text": ...}: Slack and Mattermost incoming webhooks
)

// webhook is one receiver.
type webhook struct {
	URL    string `yaml:"url"`
	Format string `yaml:"format"` // json (default) or slack
}

// parseWebhook reads [slack=|json=]URL.
func parseWebhook(s string) (webhook, error) {
	h := webhook{URL: s}
	if f, rest, ok := strings.Cut(s, "="); ok && (f == formatJSON || f == formatSlack) {
		h = webhook{URL: rest, Format: f}
	}
	return h, h.validate()
}

func (h *webhook) validate() error {
	if h.Format == "" {
		h.Format = formatJSON
	}
	if h.Format != formatJSON && h.Format != formatSlack {
		return fmt.Errorf("webhook %s: format %q: want json or slack", h.URL, h.Format)
	}
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("webhook %q: want an http(s) URL", h.URL)
	}
	return nil
}

// event is what a webhook receives (format json).
type event struct {
	Event     string     `json:"event"` // written, applied, not_applied, expired
	Action    string     `json:"action"`
	Targets   []string   `json:"targets"`
	Services  []string   `json:"services,omitempty"`
	By        string     `json:"by"`
	Reason    string     `json:"reason,omitempty"`
	Forced    bool       `json:"forced,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Revision  int64      `json:"revision"`
	Plan      []capacity `json:"plan,omitempty"`
	Acked     []string   `json:"acked,omitempty"`
	Missing   []string   `json:"not_acked,omitempty"`
	At        time.Time  `json:"at"`
	Text      string     `json:"text"` // the same, for people
}

func newEvent(kind string, h registry.HistoryEntry, res result) event {
	e := event{Event: kind, Action: h.Action, Targets: h.Targets, Services: h.Services, By: h.By, Reason: h.Reason,
		Forced: h.Forced, ExpiresAt: h.ExpiresAt, Revision: h.Revision, Plan: res.Plan, Acked: res.Acked, Missing: res.Missing, At: h.At}
	e.Text = e.summary()
	return e
}

func (e event) summary() string {
	var b strings.Builder
	scope := "every service"
	if len(e.Services) > 0 {
		scope = strings.Join(e.Services, ",")
	}
	switch e.Event {
	case "written":
		fmt.Fprintf(&b, "%s: %s %s (%s)", e.By, e.Action, strings.Join(e.Targets, ","), scope)
	case "applied":
		fmt.Fprintf(&b, "%s %s: applied by every live synapse (%d)", e.Action, strings.Join(e.Targets, ","), len(e.Acked))
	case "not_applied":
		fmt.Fprintf(&b, "%s %s: NOT applied by %s (%d applied)", e.Action, strings.Join(e.Targets, ","), strings.Join(e.Missing, ", "), len(e.Acked))
	case "expired":
		fmt.Fprintf(&b, "%s %s (%s) by %s expired", e.Action, strings.Join(e.Targets, ","), scope, e.By)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, ", reason %q", e.Reason)
	}
	if e.ExpiresAt != nil && e.Event == "written" {
		fmt.Fprintf(&b, ", until %s", e.ExpiresAt.Format(time.RFC3339))
	}
	if e.Forced {
		b.WriteString(" (forced past the safety limits)")
	}
	if e.Event == "written" {
		var pb bytes.Buffer
		printPlan(&pb, e.Plan)
		if pb.Len() > 0 {
			b.WriteString("\n" + strings.TrimRight(pb.String(), "\n"))
		}
	}
	return b.String()
}

// notifier posts events to every webhook in the background; wait joins
// the posts, bounded by the deadline.
type notifier struct {
	hooks  []webhook
	client *http.Client
	budget time.Duration // how long one post may be retried
	stderr io.Writer
	wg     sync.WaitGroup
	mu     sync.Mutex // stderr
}

// Bounds on telling people: a receiver that is down or slow costs the
// operator at most notifyBudget after the change itself is done.
const notifyAttemptTimeout = 3 * time.Second

var notifyBudget = 10 * time.Second // a var: tests shorten it

func newNotifier(hooks []webhook, stderr io.Writer) *notifier {
	return &notifier{hooks: hooks, stderr: stderr, budget: notifyBudget,
		client: &http.Client{Timeout: notifyAttemptTimeout}}
}

// post sends e to every webhook without waiting.
func (n *notifier) post(e event) {
	if n == nil {
		return
	}
	for _, h := range n.hooks {
		n.wg.Add(1)
		deadline := time.Now().Add(n.budget)
		go func() {
			defer n.wg.Done()
			if err := n.deliver(h, e, deadline); err != nil {
				n.mu.Lock()
				fmt.Fprintf(n.stderr, "synctl: warning: webhook %s not told of %s %s: %v (the change itself is done)\n", h.URL, e.Event, e.Action, err)
				n.mu.Unlock()
			}
		}()
	}
}

// wait returns once every post has been delivered or given up.
func (n *notifier) wait() {
	if n != nil {
		n.wg.Wait()
	}
}

// deliver posts e to h, retrying failures (network errors, 5xx, 429) with
// jittered backoff until deadline.
func (n *notifier) deliver(h webhook, e event, deadline time.Time) error {
	var body []byte
	if h.Format == formatSlack {
		body, _ = json.Marshal(map[string]string{"text": e.Text})
	} else {
		body, _ = json.Marshal(e)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	bo := backoff.New(200*time.Millisecond, 2*time.Second)
	for attempt := 1; ; attempt++ {
		err := n.once(ctx, h.URL, body)
		var perm permanentError
		if err == nil || errors.As(err, &perm) {
			return err
		}
		if bo.Wait(ctx) != nil {
			return fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
	}
}

// permanentError is a refusal that a retry will not change (a 4xx).
type permanentError struct{ status int }

func (e permanentError) Error() string { return fmt.Sprintf("refused with HTTP %d", e.status) }

func (n *notifier) once(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return permanentError{}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	default:
		return permanentError{resp.StatusCode}
	}
}
