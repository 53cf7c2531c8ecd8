// Package daemon is the scaffolding nerve and synapse share, so that their
// main packages hold only their own wiring: the common flags (-config,
// -check-config, -log-level, -log-format, -version) and their exit codes,
// the logger, the Prometheus registry, the admin listener and the signals
// (SIGHUP reloads, SIGTERM and SIGINT stop).
//
// Exit codes, the same for every daemon: 0 done (or -h, -version), 1 an
// invalid config or a failure at run time, 2 a usage error (an unknown flag,
// a stray argument, a bad -log-level or -log-format).
package daemon

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/syncstack/syncstack/internal/cli"
	"github.com/syncstack/syncstack/internal/version"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1 // invalid config, or a failure while running
	ExitUsage   = 2 // bad flags or arguments
)

// Command describes one daemon's command line.
type Command struct {
	Name             string // "nerve": the usage line, messages and the build_info metric
	About            string // the usage text between "Usage:" and the flags
	DefaultConfig    string // -config's default
	ConfigUsage      string // -config's help
	CheckConfigUsage string // -check-config's help

	// Stdout and Stderr default to the process's.
	Stdout, Stderr io.Writer
}

// Flags is a parsed command line.
type Flags struct {
	ConfigPath  string
	CheckConfig bool
	Log         *slog.Logger // from -log-level and -log-format, writing to Stderr
}

func (c Command) streams() (io.Writer, io.Writer) {
	out, errw := c.Stdout, c.Stderr
	if out == nil {
		out = os.Stdout
	}
	if errw == nil {
		errw = os.Stderr
	}
	return out, errw
}

// Parse parses args. When the process should exit now (-h, -version, a
// usage error), exit is true and code is the exit status; what there was
// to say has been written.
func (c Command) Parse(args []string) (f Flags, code int, exit bool) {
	stdout, stderr := c.streams()
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.StringVar(&f.ConfigPath, "config", c.DefaultConfig, c.ConfigUsage)
	fs.BoolVar(&f.CheckConfig, "check-config", false, c.CheckConfigUsage)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	showVersion := fs.Bool("version", false, "print the version, commit and Go version, and exit")
	// The usage goes to stdout when asked for (-h, exit 0) and to stderr
	// after a mistake (exit 2): buffer it until we know which.
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.Usage = func() {
		fmt.Fprintf(&usage, "Usage: %s [flags]\n\n%s\n\nFlags:\n", c.Name, c.About)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			stdout.Write(usage.Bytes())
			return f, ExitOK, true
		}
		stderr.Write(usage.Bytes())
		return f, ExitUsage, true
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Line(c.Name))
		return f, ExitOK, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", c.Name, fs.Args())
		return f, ExitUsage, true
	}
	log, err := cli.NewLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return f, ExitUsage, true
	}
	f.Log = log
	return f, ExitOK, false
}

// InvalidConfig reports a config that cannot be used and returns
// ExitFailure.
func (c Command) InvalidConfig(err error) int {
	_, stderr := c.streams()
	fmt.Fprintf(stderr, "%s: invalid config: %v\n", c.Name, err)
	return ExitFailure
}

// ConfigOK is -check-config's success line, on Stdout; it returns ExitOK.
func (c Command) ConfigOK(path string, services int) int {
	stdout, _ := c.streams()
	fmt.Fprintf(stdout, "%s: OK, %d services\n", path, services)
	return ExitOK
}

// SetGCPercent sets the collector's target unless GOGC is in the
// environment (which then wins, as the runtime documents).
func SetGCPercent(percent int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}

// defaultMemProfileRate is the runtime's own default sampling rate.
const defaultMemProfileRate = 512 * 1024

// ProfileMemory turns the runtime's heap sampling on or off, unless
// GODEBUG sets memprofilerate (which then wins). The daemons keep it off
// until their config turns admin.pprof on: every sample walks its stack
// (paging in the binary's tables) and keeps a record, which costs nerve
// 0.5–1.3 MB of its 24 MB budget (bench, BenchmarkNerve100Services) and
// buys nothing while nobody can fetch the profile. Call it first in main
// with false, then once with the first config's choice (the runtime wants
// the rate set early, and once: a reload does not change it).
func ProfileMemory(on bool) {
	if strings.Contains(os.Getenv("GODEBUG"), "memprofilerate=") {
		return
	}
	if on {
		runtime.MemProfileRate = defaultMemProfileRate
	} else {
		runtime.MemProfileRate = 0
	}
}

// NewRegistry is a Prometheus registry with the Go runtime's and the
// process's collectors and name_build_info.
func NewRegistry(name string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector(name))
	return reg
}

// LogStart logs the build that is starting.
func LogStart(log *slog.Logger) {
	log.Info("starting", "version", version.Get().Version, "commit", version.Get().Commit)
}

// ServeAdmin serves h on addr until the returned stop is called; addr
// "off" serves nothing (stop is then a no-op). A listen error is returned
// so that the daemon exits rather than run without its admin API.
func ServeAdmin(log *slog.Logger, addr string, h http.Handler) (stop func(), err error) {
	if addr == "off" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("admin listener", "listen", addr, "err", err)
		return nil, fmt.Errorf("admin listener %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	log.Info("admin API listening", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// Signal is what a daemon is asked to do.
type Signal struct {
	Reload bool      // SIGHUP; otherwise stop (SIGTERM, SIGINT)
	Sig    os.Signal // for the log
}

// Signals delivers SIGHUP as a reload and SIGTERM and SIGINT as a stop,
// from now until stop is called.
func Signals() (sigs <-chan Signal, stop func()) {
	raw := make(chan os.Signal, 4)
	signal.Notify(raw, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	out := make(chan Signal, 4)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-raw:
				select {
				case out <- Signal{Reload: s == syscall.SIGHUP, Sig: s}:
				case <-done:
					return
				}
			case <-done:
				return
			}
		}
	}()
	return out, func() { signal.Stop(raw); close(done) }
}
