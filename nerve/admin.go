package nerve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
//	GET    /debug/pprof/                    Go profiles
func (a *Agent) AdminHandler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"services": a.Status()})
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
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	return mux
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
