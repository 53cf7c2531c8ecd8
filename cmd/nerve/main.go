// Command nerve health-checks the service instances of this host and keeps
// the healthy ones registered in ZooKeeper or etcd.
//
//	nerve -config /etc/syncstack/nerve.yaml
//	nerve -config nerve.conf.json -check-config
//
// SIGHUP reloads the config (an invalid one is logged and the old one kept).
// SIGTERM or SIGINT deregisters every service, waits drain_delay, exits 0.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/syncstack/syncstack/internal/cli"
	"github.com/syncstack/syncstack/internal/version"
	"github.com/syncstack/syncstack/nerve"
	"github.com/syncstack/syncstack/registry"
)

func main() {
	// nerve's live heap is small and steady; collecting at +50% instead
	// of +100% trims its footprint on every host for a fraction of a
	// percent of CPU. GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("nerve", flag.ContinueOnError)
	configPath := fs.String("config", "/etc/syncstack/nerve.yaml", "config file (YAML, or Airbnb nerve JSON)")
	checkConfig := fs.Bool("check-config", false, "validate the config and exit: 0 valid, 1 not")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	showVersion := fs.Bool("version", false, "print the version, commit and Go version, and exit")
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.Usage = func() {
		fmt.Fprintf(&usage, "Usage: nerve [flags]\n\nHealth-checks this host's service instances and keeps the healthy ones\nregistered. SIGHUP reloads the config; SIGTERM deregisters and exits.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Stdout.Write(usage.Bytes())
			return 0
		}
		os.Stderr.Write(usage.Bytes())
		return 2
	}
	if *showVersion {
		fmt.Println(version.Line("nerve"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "nerve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := cli.NewLogger(os.Stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nerve:", err)
		return 2
	}
	cfg, err := nerve.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nerve: invalid config:", err)
		return 1
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	if *checkConfig {
		fmt.Printf("%s: OK, %d services\n", *configPath, len(cfg.Services))
		return 0
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), version.Collector("nerve"))
	log.Info("starting", "version", version.Get().Version, "commit", version.Get().Commit)
	agent := nerve.New(cfg, nerve.Options{
		Logger: log, Metrics: nerve.NewMetrics(reg), RegistryMetrics: registry.NewMetrics(reg),
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Admin.Listen != "off" {
		ln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			log.Error("admin listener", "listen", cfg.Admin.Listen, "err", err)
			return 1
		}
		srv := &http.Server{Handler: agent.AdminHandler(reg), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("admin API listening", "addr", ln.Addr().String())
	}

	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("nerve stopped", "err", err)
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				cfg = reload(log, agent, *configPath, cfg)
				continue
			}
			log.Info("signal received: deregistering every service", "signal", sig.String())
			if err := agent.Shutdown(context.Background()); err != nil {
				log.Error("deregistration", "err", err)
			}
			if d := cfg.DrainDelay.D(); d > 0 {
				log.Info("waiting for the drain delay", "delay", d)
				time.Sleep(d)
			}
			cancel()
			<-done
			return 0
		}
	}
}

// reload applies the config at path and returns the config in force.
func reload(log *slog.Logger, agent *nerve.Agent, path string, old *nerve.Config) *nerve.Config {
	cfg, err := nerve.Load(path)
	if err != nil {
		log.Error("SIGHUP: the new config is invalid; keeping the old one", "err", err)
		return old
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	if cfg.Admin.Listen != old.Admin.Listen {
		log.Warn("SIGHUP: admin.listen changed; it takes effect at the next restart")
	}
	if err := agent.Reload(cfg); err != nil {
		log.Error("SIGHUP: reload", "err", err)
	} else {
		log.Info("SIGHUP: config reloaded", "services", len(cfg.Services))
	}
	return cfg
}
