// Package version says which build of syncstack is running: the version
// (from `git describe` at build time, or a release tag), the commit and the
// Go version. `make build` sets Version and Commit with -ldflags; a plain
// `go build` falls back to what the Go toolchain recorded about the VCS.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at build time: -ldflags "-X github.com/syncstack/syncstack/internal/version.Version=v1.2.3 -X ...Commit=abc".
var (
	Version = ""
	Commit  = ""
)

// Info is one build's identity.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns this binary's build identity; unknown parts are "unknown"
// (never empty, so a dashboard can group by them).
func Get() Info {
	i := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Commit == "" {
					i.Commit = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		if i.Version == "" && i.Commit != "" {
			i.Version = "dev-" + short(i.Commit)
			if dirty {
				i.Version += "-dirty"
			}
		}
	}
	if i.Version == "" {
		i.Version = "unknown"
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	return i
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

// String is what --version prints.
func (i Info) String() string {
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}

// Line is what --version prints: "<program> <version> (commit …, go…)".
func Line(program string) string { return program + " " + Get().String() }

// Collector is the <namespace>_build_info gauge: always 1, the build in its
// labels, as Prometheus's own exporters do.
func Collector(namespace string) prometheus.Collector {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        namespace + "_build_info",
		Help:        "The running build: 1, with its version, commit and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "goversion": i.GoVersion},
	})
	g.Set(1)
	return g
}
