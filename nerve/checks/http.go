package checks

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"time"
)

// maxBody bounds what an http check reads of a response body.
const maxBody = 64 << 10

// HTTP is healthy when a GET answers with a status in range and, when
// Expect is set, a body that contains it. TLS is verified unless the
// config opts out.
type HTTP struct {
	URL       string
	Host      string // Host header, when set
	Headers   map[string]string
	Expect    []byte
	StatusMin int
	StatusMax int
	client    *http.Client
	name      string
}

func newHTTP(c Config, addr string) *HTTP {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: c.TLSSkipVerify},
		DisableKeepAlives:   true, // a health check opens a fresh connection, as a client would
		MaxIdleConns:        0,
		TLSHandshakeTimeout: c.Timeout.D(),
	}
	if c.HostHeader != "" && c.Type == "https" {
		tr.TLSClientConfig.ServerName = c.HostHeader
	}
	h := &HTTP{
		URL:  c.Type + "://" + addr + c.URI,
		Host: c.HostHeader, Headers: c.Headers, Expect: []byte(c.Expect),
		StatusMin: c.statusMin, StatusMax: c.statusMax, name: c.Name,
		client: &http.Client{
			Transport: tr,
			// A redirect is an answer: judge its status, do not follow it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       c.Timeout.D() + time.Second, // ctx is the real bound
		},
	}
	return h
}

// Name implements Check.
func (h *HTTP) Name() string { return h.name }

// Check implements Check.
func (h *HTTP) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "syncstack-nerve")
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	if h.Host != "" {
		req.Host = h.Host
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil && len(h.Expect) > 0 {
		return fmt.Errorf("reading body: %w", err)
	}
	if resp.StatusCode < h.StatusMin || resp.StatusCode > h.StatusMax {
		return fmt.Errorf("status %d, want %d-%d", resp.StatusCode, h.StatusMin, h.StatusMax)
	}
	if len(h.Expect) > 0 && !bytes.Contains(body, h.Expect) {
		return fmt.Errorf("body does not contain %q", h.Expect)
	}
	return nil
}
