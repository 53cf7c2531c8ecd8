// Command synapse keeps the HAProxy next to it in step with the registry:
// membership, weight and drain changes through the runtime API, reloads only
// for structural changes.
//
//	synapse -config /etc/syncstack/synapse.yaml
//	synapse -config synapse.conf.json -check-config
//
// At start the HAProxy part is checked with haproxy -c (as -check-config
// does): a config HAProxy rejects exits 1 with HAProxy's message. SIGHUP
// reloads the config (an invalid one, or one HAProxy rejects, is logged and
// the old one kept); SIGTERM or SIGINT stops synapse and leaves HAProxy
// serving.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"

	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/daemon"
	"github.com/syncstack/syncstack/registry"
	"github.com/syncstack/syncstack/synapse"
)

var command = daemon.Command{
	Name:             "synapse",
	About:            "Keeps the local HAProxy in step with the registry. SIGHUP reloads the config,\nSIGTERM stops synapse and leaves HAProxy serving.",
	DefaultConfig:    "/etc/syncstack/synapse.yaml",
	ConfigUsage:      "config file (YAML, or Airbnb synapse JSON)",
	CheckConfigUsage: "validate the config (and the HAProxy part with haproxy -c) and exit: 0 valid, 1 not",
}

func main() {
	// synapse holds every backend once or twice; collecting at +50%
	// instead of +100% keeps its footprint near the live set for little
	// CPU.
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
	cfg, err := synapse.Load(flags.ConfigPath)
	if err != nil {
		return command.InvalidConfig(err)
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	daemon.ProfileMemory(cfg.Admin.Pprof)
	if flags.CheckConfig {
		if err := checkHAProxy(cfg); err != nil {
			return command.InvalidConfig(err)
		}
		if cfg.HAProxy != nil && cfg.HAProxy.Manage {
			if err := checkFDLimit(cfg.HAProxy.Global); err != nil {
				// The limit is this shell's, not necessarily the service's.
				fmt.Fprintln(os.Stderr, "synapse: warning: here,", err)
			}
		}
		return command.ConfigOK(flags.ConfigPath, len(cfg.Services))
	}
	// A global or defaults line HAProxy rejects would fail every write of
	// haproxy.cfg, and synapse would serve /healthz "ok" forever with no
	// HAProxy behind it: check the config as HAProxy would load it first,
	// and exit with HAProxy's message.
	if writesHAProxy(cfg) {
		if err := checkHAProxy(cfg); err != nil {
			return command.InvalidConfig(err)
		}
	}
	// A managed HAProxy that cannot get its descriptors would be retried
	// every 2 s forever: say why, once, and exit.
	if cfg.HAProxy != nil && cfg.HAProxy.Manage {
		if err := checkFDLimit(cfg.HAProxy.Global); err != nil {
			fmt.Fprintln(os.Stderr, "synapse:", err)
			return daemon.ExitFailure
		}
	}

	reg := daemon.NewRegistry("synapse")
	daemon.LogStart(log)
	opts := synapse.Options{Logger: log, Metrics: synapse.NewMetrics(reg), HAProxyMetrics: haproxy.NewMetrics(reg), RegistryMetrics: registry.NewMetrics(reg)}

	var current atomic.Pointer[synapse.Synapse] // swapped on SIGHUP, read by the admin API
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := current.Load(); s != nil {
			s.AdminHandler(reg).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	})
	stopAdmin, err := daemon.ServeAdmin(log, cfg.Admin.Listen, handler)
	if err != nil {
		return daemon.ExitFailure
	}
	defer stopAdmin()

	sigs, stopSignals := daemon.Signals()
	defer stopSignals()
	for {
		s, err := synapse.New(cfg, opts)
		if err != nil {
			log.Error("synapse", "err", err)
			return daemon.ExitFailure
		}
		current.Store(s)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		log.Info("synapse running", "services", len(cfg.Services), "id", cfg.ID)
	wait:
		for {
			select {
			case err := <-done:
				cancel()
				if err != nil {
					log.Error("synapse stopped", "err", err)
					return daemon.ExitFailure
				}
				return daemon.ExitOK
			case sig := <-sigs:
				if !sig.Reload {
					log.Info("signal received: stopping; HAProxy keeps serving", "signal", sig.Sig.String())
					cancel()
					<-done
					return daemon.ExitOK
				}
				next, err := synapse.Load(flags.ConfigPath)
				if err != nil {
					log.Error("SIGHUP: the new config is invalid; keeping the old one", "err", err)
					continue
				}
				if writesHAProxy(next) {
					if err := checkHAProxy(next); err != nil {
						log.Error("SIGHUP: HAProxy rejects the new config; keeping the old one", "err", err)
						continue
					}
				}
				for _, w := range next.Warnings {
					log.Warn("config: " + w)
				}
				// A fresh pipeline picks the new config up; HAProxy keeps
				// serving meanwhile, and only a structural change reloads it.
				cancel()
				<-done
				cfg = next
				log.Info("SIGHUP: config reloaded")
				break wait
			}
		}
	}
}

// writesHAProxy reports whether synapse writes a haproxy.cfg for cfg (and
// validates it with haproxy -c before every write).
func writesHAProxy(cfg *synapse.Config) bool {
	return cfg.HAProxy != nil && (cfg.HAProxy.DoWrites == nil || *cfg.HAProxy.DoWrites)
}

// checkHAProxy renders the HAProxy config with no backends and runs
// haproxy -c on it, next to config_file_path when that directory exists
// (relative paths, with `default-path config`, resolve as they will), else
// in a temp directory (-check-config on another machine).
func checkHAProxy(cfg *synapse.Config) error {
	if cfg.HAProxy == nil {
		return nil
	}
	if _, err := exec.LookPath(cfg.HAProxy.Binary); err != nil {
		return fmt.Errorf("haproxy: %v (needed to check the HAProxy part)", err)
	}
	var file string
	if p := cfg.HAProxy.ConfigFilePath; p != "" {
		if f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".check-*"); err == nil {
			file = f.Name()
			f.Close()
			defer os.Remove(file)
		}
	}
	if file == "" {
		dir, err := os.MkdirTemp("", "synapse-check")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		file = filepath.Join(dir, "haproxy.cfg")
	}
	return haproxy.Check(context.Background(), cfg.HAProxy, cfg.HAProxyServices(), file)
}
