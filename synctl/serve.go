package synctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/syncstack/syncstack/registry"
)

// synctl serve: a read-only page of the fleet, on loopback. It reads the
// registry on each request (a page load costs what `synctl status` does)
// and refreshes itself; no JavaScript.

type pageData struct {
	Now      time.Time
	Refresh  int // seconds
	Status   statusReport
	History  []registry.HistoryEntry
	Err      string // the registry could not be read: shown, not a 500
	Services []string
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago": func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() },
	"services": func(s []string) string {
		if len(s) == 0 {
			return "all"
		}
		return strings.Join(s, ", ")
	},
}).Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>syncstack fleet</title>
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #111; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { border: 1px solid #999; padding: .25rem .6rem; text-align: left; }
caption { text-align: left; font-weight: 600; padding: .25rem 0; }
.out { background: #fde2e1; } .behind { background: #fff3c4; }
</style>
</head>
<body>
<h1>syncstack fleet</h1>
<p>Read {{.Now.Format "2006-01-02 15:04:05 MST"}}; this page reloads every {{.Refresh}} s.</p>
{{if .Err}}<p role="alert"><strong>Registry unreachable:</strong> {{.Err}}</p>{{end}}

<h2 id="services">Services</h2>
{{range $name := .Services}}{{$set := index $.Status.Services $name}}
<table aria-describedby="services">
<caption>{{$name}}: {{len $set}} backends</caption>
<thead><tr><th scope="col">Host</th><th scope="col">Port</th><th scope="col">Name</th><th scope="col">State</th><th scope="col">Weight</th><th scope="col">Held out by</th><th scope="col">Reason</th></tr></thead>
<tbody>
{{range $set}}<tr{{if not .Serving}} class="out"{{end}}><td>{{.Host}}</td><td>{{.Port}}</td><td>{{.Name}}</td><td>{{.StateText}}</td><td>{{.WeightText}}</td><td>{{.HeldByText}}</td><td>{{.ReasonText}}</td></tr>
{{else}}<tr><td colspan="7">no backends</td></tr>
{{end}}</tbody>
</table>
{{else}}<p>No service known yet.</p>{{end}}

<h2 id="overrides">Active overrides</h2>
{{if .Status.Overrides}}<table aria-describedby="overrides">
<thead><tr><th scope="col">Target</th><th scope="col">State</th><th scope="col">Weight</th><th scope="col">Services</th><th scope="col">Reason</th><th scope="col">By</th><th scope="col">At</th><th scope="col">Expires</th></tr></thead>
<tbody>
{{range .Status.Overrides}}<tr><td>{{.Target}}</td><td>{{.State}}</td><td>{{if .Weight}}{{.Weight}}{{else}}-{{end}}</td><td>{{services .Services}}</td><td>{{.Reason}}</td><td>{{.By}}</td><td>{{.At.Format "2006-01-02 15:04:05"}}</td><td>{{if .ExpiresAt}}{{.ExpiresAt.Format "2006-01-02 15:04:05"}}{{else}}never{{end}}</td></tr>
{{end}}</tbody>
</table>{{else}}<p>None.</p>{{end}}

<h2 id="synapses">Synapses</h2>
<p>{{if .Status.OverrideRevision}}Last override change: revision {{.Status.OverrideRevision}}.{{else}}No override written yet.{{end}}</p>
{{if .Status.Synapses}}<table aria-describedby="synapses">
<thead><tr><th scope="col">Synapse</th><th scope="col">State</th><th scope="col">Revision applied</th><th scope="col">Last seen</th><th scope="col">Quarantined servers</th></tr></thead>
<tbody>
{{range .Status.Synapses}}<tr{{if or (ne .State "in sync") .Quarantined .Held .ServicesUnknown}} class="behind"{{end}}><td>{{.ID}}</td><td>{{.State}}{{if .ServicesUnknown}}, SERVICES UNKNOWN{{end}}</td><td>{{if .Live}}{{.Revision}}{{else}}-{{end}}</td><td>{{ago $.Now .At}} ago</td><td>{{if .ServicesUnknown}}its acks leave its services to a catalog that is missing<br>{{end}}{{range .Quarantined}}{{.}}<br>{{else}}{{if not (or .Held .ServicesUnknown)}}none{{end}}{{end}}{{range .Held}}held back (panic threshold): {{.}}<br>{{end}}</td></tr>
{{end}}</tbody>
</table>{{else}}<p>No synapse acks overrides in this registry.</p>{{end}}

<h2 id="history">Recent history</h2>
{{if .History}}<table aria-describedby="history">
<thead><tr><th scope="col">At</th><th scope="col">By</th><th scope="col">Action</th><th scope="col">Targets</th><th scope="col">Services</th><th scope="col">Reason</th></tr></thead>
<tbody>
{{range .History}}<tr><td>{{.At.Format "2006-01-02 15:04:05"}}</td><td>{{.By}}</td><td>{{.Action}}{{if .Weight}} {{.Weight}}{{end}}{{if .Forced}} (forced){{end}}</td><td>{{services .Targets}}</td><td>{{services .Services}}</td><td>{{.Reason}}</td></tr>
{{end}}</tbody>
</table>{{else}}<p>Nothing yet.</p>{{end}}
</body>
</html>
`))

// Exported for the template: the same words as `synctl status`.
func (s backendState) StateText() string  { return s.stateText() }
func (s backendState) WeightText() string { return s.weightText() }
func (s backendState) HeldByText() string { return s.heldByText() }
func (s backendState) ReasonText() string { return s.reasonText() }
func (s synapseStatus) State() string     { return s.state() }
func (p pageData) serviceNames() []string { return sortedKeys(p.Status.Services) }

// serveFlags are serve's own flags.
func serveFlags(fs *flag.FlagSet) (listen *string, refresh *time.Duration) {
	return fs.String("listen", "127.0.0.1:9393", "where to serve the page: a loopback address"),
		fs.Duration("refresh", 2*time.Second, "how often the page reloads itself")
}

func runServe(ctx context.Context, env Env, args []string) error {
	var c common
	fs := newFlagSet(env, "serve", "serve [--listen 127.0.0.1:9393] [--refresh 2s] [flags]")
	c.register(fs)
	listen, refresh := serveFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected arguments %q", pos)
	}
	if *refresh < time.Second {
		return usagef("--refresh %v: want at least 1s", *refresh)
	}
	if err := checkLoopback(*listen); err != nil {
		return usagef("--listen: %v", err)
	}
	b, err := c.connect(env)
	if err != nil {
		return err
	}
	defer b.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "serving the fleet page on http://%s/ (Ctrl-C stops)\n", ln.Addr())
	srv := &http.Server{Handler: pageHandler(b, &c, env, int(refresh.Seconds())), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// checkLoopback refuses a listen address off loopback: the page names every
// host and who drained it, and has no authentication.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address (the page has no authentication)", addr)
	}
	return nil
}

func pageHandler(b pageReader, c *common, env Env, refresh int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		now := env.Now()
		data := pageData{Now: now, Refresh: refresh}
		rep, err := buildStatus(r.Context(), b, c, now, nil)
		if err == nil {
			data.History, err = b.History(r.Context(), 20)
		}
		if err != nil {
			data.Err = err.Error()
		}
		data.Status = rep
		data.Services = data.serviceNames()
		// Newest history first on a page.
		for i, j := 0, len(data.History)-1; i < j; i, j = i+1, j-1 {
			data.History[i], data.History[j] = data.History[j], data.History[i]
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
		if err := pageTmpl.Execute(w, data); err != nil {
			slog.Warn("status page", "err", err)
		}
	})
	return mux
}
