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
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/syncstack/syncstack/internal/daemon"
	"github.com/syncstack/syncstack/nerve"
	"github.com/syncstack/syncstack/registry"
)

var command = daemon.Command{
	Name:             "nerve",
	About:            "Health-checks this host's service instances and keeps the healthy ones\nregistered. SIGHUP reloads the config; SIGTERM deregisters and exits.",
	DefaultConfig:    "/etc/syncstack/nerve.yaml",
	ConfigUsage:      "config file (YAML, or Airbnb nerve JSON)",
	CheckConfigUsage: "validate the config and exit: 0 valid, 1 not",
}

func main() {
	// nerve's live heap is small and steady; collecting at +50% instead
	// of +100% trims its footprint on every host for a fraction of a
	// percent of CPU.
	daemon.SetGCPercent(50)
	daemon.ProfileMemory(false) // until the config says admin.pprof
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	flags, code, exit := command.Parse(args)
	if exit {
		return code
	}
	log := flags.Log
	cfg, err := nerve.Load(flags.ConfigPath)
	if err != nil {
		return command.InvalidConfig(err)
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	daemon.ProfileMemory(cfg.Admin.Pprof)
	if flags.CheckConfig {
		return command.ConfigOK(flags.ConfigPath, len(cfg.Services))
	}

	reg := daemon.NewRegistry("nerve")
	daemon.LogStart(log)
	agent := nerve.New(cfg, nerve.Options{
		Logger: log, Metrics: nerve.NewMetrics(reg), RegistryMetrics: registry.NewMetrics(reg),
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopAdmin, err := daemon.ServeAdmin(log, cfg.Admin.Listen, agent.AdminHandler(reg))
	if err != nil {
		return daemon.ExitFailure
	}
	defer stopAdmin()

	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()

	sigs, stopSignals := daemon.Signals()
	defer stopSignals()
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Error("nerve stopped", "err", err)
				return daemon.ExitFailure
			}
			return daemon.ExitOK
		case sig := <-sigs:
			if sig.Reload {
				cfg = reload(log, agent, flags.ConfigPath, cfg)
				continue
			}
			log.Info("signal received: deregistering every service", "signal", sig.Sig.String())
			if err := agent.Shutdown(context.Background()); err != nil {
				log.Error("deregistration", "err", err)
			}
			if d := cfg.DrainDelay.D(); d > 0 {
				log.Info("waiting for the drain delay", "delay", d)
				// The drain delay is the wait itself: load balancers that
				// saw the deregistration stop sending before we exit.
				time.Sleep(d)
			}
			cancel()
			<-done
			return daemon.ExitOK
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
