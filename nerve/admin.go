package nerve

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/syncstack/syncstack/internal/version"
)

// maxAdminBody bounds a request body of the admin API.
const maxAdminBody = 64 << 10

// AdminHandler serves the local admin API:
//
//	GET    /status                          every service: state, checks, registration
//	POST   /services/{name}/maintenance     {"reason": "..."}: deregister and hold
//	DELETE /services/{name}/maintenance     release
//	PUT    /services/{name}/weight          {"weight": N} (null: the config's)
//	GET    /metrics                         Prometheus metrics from gatherer
//	GET    /healthz                         200 while nerve runs
//	GET    /debug/pprof/                    Go profiles, with admin.pprof
//
// Whoever can change this API takes the host out of every load balancer,
// so every request (but /healthz) must name the listener itself as its
// Host (no DNS rebinding), carry no Origin of another site, and, with
// admin.token_file, the bearer token; POST and PUT must be
// application/json (a cross-site form or text/plain POST is refused before
// it is read).
func (a *Agent) AdminHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	a.adminRoutes(mux, gatherer)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			if status, err := a.admit(r); err != nil {
				writeError(w, status, err)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

// admit checks a request against the admin API's guards.
func (a *Agent) admit(r *http.Request) (int, error) {
	a.mu.Lock()
	admin := a.cfg.Admin
	a.mu.Unlock()
	if !sameHost(r) {
		return http.StatusForbidden, fmt.Errorf("Host %q is not this listener", r.Host)
	}
	if o := r.Header.Get("Origin"); o != "" {
		if u, err := url.Parse(o); err != nil || u.Host != r.Host {
			return http.StatusForbidden, fmt.Errorf("cross-site request from %q refused", o)
		}
	}
	if admin.token != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(admin.token)) != 1 {
			return http.StatusUnauthorized, errors.New("a bearer token is required (admin.token_file)")
		}
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			return http.StatusUnsupportedMediaType, errors.New("Content-Type: application/json is required")
		}
	}
	return 0, nil
}

// sameHost reports whether the request's Host names the address it was
// received on (or localhost with that port): a page that rebinds its own
// name to 127.0.0.1 still sends its own name.
func sameHost(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	_, port, err := net.SplitHostPort(local.String())
	if err != nil {
		return false
	}
	host, hport, err := net.SplitHostPort(r.Host)
	if err != nil || hport != port {
		return false
	}
	if host == "localhost" {
		return true
	}
	lhost, _, _ := net.SplitHostPort(local.String())
	ip, lip := net.ParseIP(host), net.ParseIP(lhost)
	return ip != nil && lip != nil && ip.Equal(lip)
}

func (a *Agent) adminRoutes(mux *http.ServeMux, gatherer prometheus.Gatherer) {
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"services": a.Status(), "build": version.Get()})
	})
	mux.HandleFunc("POST /services/{name}/maintenance", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reason string `json:"reason"`
		}
		if err := readJSON(r, &body, true); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		if body.Reason == "" {
			body.Reason = r.URL.Query().Get("reason")
		}
		a.answer(w, a.SetMaintenance(r.PathValue("name"), body.Reason), r.PathValue("name"))
	})
	mux.HandleFunc("DELETE /services/{name}/maintenance", func(w http.ResponseWriter, r *http.Request) {
		a.answer(w, a.ClearMaintenance(r.PathValue("name")), r.PathValue("name"))
	})
	mux.HandleFunc("PUT /services/{name}/weight", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Weight *int `json:"weight"`
		}
		if err := readJSON(r, &body, false); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		a.answer(w, a.SetWeight(r.PathValue("name"), body.Weight), r.PathValue("name"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	a.mu.Lock()
	withPprof := a.cfg.Admin.Pprof
	a.mu.Unlock()
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
}

func (a *Agent) answer(w http.ResponseWriter, err error, name string) {
	switch {
	case errors.Is(err, ErrNoService):
		writeError(w, http.StatusNotFound, err)
	case err != nil:
		writeError(w, http.StatusBadRequest, err)
	default:
		s, _ := a.service(name)
		if s == nil {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
			return
		}
		writeJSON(w, http.StatusOK, s.status())
	}
}

func readJSON(r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return err
	}
	if len(body) > maxAdminBody {
		return fmt.Errorf("body over %d bytes", maxAdminBody)
	}
	if len(body) == 0 {
		if optional {
			return nil
		}
		return errors.New("a JSON body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
