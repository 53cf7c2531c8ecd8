package haproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/syncstack/syncstack/internal/atomicfile"
)

// process is the HAProxy the generator drives: it finds it or starts it
// (master-worker, as a daemon), knows the skeleton of the config it runs,
// reloads it (rate-limited by reload_min_interval, confirmed by the worker
// PID: reload.go) and, when it manages it, has a watchdog notice it gone.
//
// Its state belongs to the apply path: the Generator calls its methods
// with its apply lock held. The watchdog only probes the sockets (running)
// and hands a HAProxy found gone to onGone, which takes that lock.
type process struct {
	cfg *Config
	log *slog.Logger
	m   *Metrics
	rt  RuntimeClient
	// confirmTimeout bounds the wait for a new worker after a reload.
	confirmTimeout time.Duration

	attached    bool
	started     bool      // this generator started HAProxy (it was not running)
	runningSkel string    // skeleton of the config the running HAProxy loaded
	lastReload  time.Time // zero: none yet

	// started is called right after HAProxy is started, before waiting
	// for its sockets: tests kill it there (nil otherwise).
	startedHook func()

	// onGone is called by the watchdog when HAProxy does not answer.
	onGone    func(ctx context.Context)
	stop      chan struct{} // ends the watchdog
	watchOnce sync.Once
	watchWG   sync.WaitGroup
	stopOnce  sync.Once
}

func newProcess(cfg *Config, log *slog.Logger, m *Metrics, rt RuntimeClient) *process {
	return &process{cfg: cfg, log: log, m: m, rt: rt, confirmTimeout: 15 * time.Second, stop: make(chan struct{})}
}

// forget is what a HAProxy found gone leaves: nothing attached, no config
// loaded, no reload to space the next one from.
func (p *process) forget() {
	p.attached, p.runningSkel, p.lastReload = false, "", time.Time{}
}

// loaded records that HAProxy confirmed loading a config of skeleton skel.
func (p *process) loaded(skel string) {
	p.runningSkel = skel
	p.markLoaded(skel)
}

// reloadWait is how long reload_min_interval still holds a reload back;
// 0 or less: it may go now.
func (p *process) reloadWait(now time.Time) time.Duration {
	if p.lastReload.IsZero() {
		return 0
	}
	return p.lastReload.Add(p.cfg.ReloadMinInterval.D()).Sub(now)
}

// gone reports whether the managed HAProxy is not running: no answer on
// its sockets twice, half a second apart (a master re-executing for a
// reload refuses connections for tens of milliseconds), and its master
// process, when the PID file names one, gone too.
func (p *process) gone(ctx context.Context) bool {
	if p.running(ctx) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(500 * time.Millisecond):
	}
	if p.running(ctx) {
		return false
	}
	if pid := p.masterPID(); pid > 0 && processAlive(pid) {
		p.log.Warn("haproxy does not answer on its sockets but its master process lives; not starting another", "pid", pid)
		return false
	}
	return true
}

// masterPID is the PID the PID file names, 0 without one.
func (p *process) masterPID() int {
	if p.cfg.PIDFile == "" {
		return 0
	}
	b, err := os.ReadFile(p.cfg.PIDFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// watchdogEvery is how often a managed HAProxy is checked between changes.
const watchdogEvery = 2 * time.Second

// watchdog hands HAProxy to onGone when it does not answer while nothing
// changes (a change finds out by itself). It ends with stopWatchdog.
func (p *process) watchdog() {
	defer p.watchWG.Done()
	tick := time.NewTicker(watchdogEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if !p.running(ctx) {
			p.onGone(ctx)
		}
		cancel()
	}
}

func (p *process) startWatchdog() {
	p.watchOnce.Do(func() {
		p.watchWG.Add(1)
		go p.watchdog()
	})
}

// stopWatchdog ends the watchdog and waits for it.
func (p *process) stopWatchdog() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.watchWG.Wait()
}

// attach finds the running HAProxy, or starts one when managing it, and
// learns the skeleton of the config it runs. bootSkel is the skeleton of
// the config file as it was before this generator wrote it.
func (p *process) attach(ctx context.Context, bootSkel string) error {
	running := p.running(ctx)
	if !running && p.cfg.Manage {
		if err := p.start(ctx); err != nil {
			return err
		}
		p.started = true
		content, _ := os.ReadFile(p.cfg.ConfigFilePath)
		skel := skeletonOf(string(content))
		if !on(p.cfg.DoSocket, true) {
			skel = string(content)
		}
		p.loaded(skel)
		p.attached = true
		p.startWatchdog()
		return nil
	}
	if !running && on(p.cfg.DoSocket, true) {
		return fmt.Errorf("haproxy: not running (no answer on %s); set haproxy.manage to start it", p.cfg.SocketFilePath)
	}
	if p.cfg.Manage {
		p.startWatchdog()
	}
	// We cannot ask HAProxy what config it loaded: assume the file on disk
	// as it was before this synapse wrote it, unless the mark of the last
	// confirmed load says that file never made it (a reload failed, then
	// synapse restarted): then reload once.
	p.runningSkel = bootSkel
	if mark, err := os.ReadFile(p.loadedMarkPath()); err == nil && strings.TrimSpace(string(mark)) != skelHash(bootSkel) {
		p.log.Warn("haproxy.cfg on disk was never confirmed loaded by HAProxy; it will be reloaded", "config", p.cfg.ConfigFilePath)
		p.runningSkel = ""
	}
	p.attached = true
	return nil
}

// configMode is the mode of the files the generator writes: HAProxy's
// config names every backend, its addresses and options (sometimes
// credentials in `global`): owner and group only.
const configMode = 0o640

// loadedMarkPath holds the hash of the skeleton HAProxy last confirmed
// loading (a start, or a reload with a new worker).
func (p *process) loadedMarkPath() string { return p.cfg.ConfigFilePath + ".loaded" }

func skelHash(skel string) string {
	h := sha256.Sum256([]byte(skel))
	return hex.EncodeToString(h[:])
}

func (p *process) markLoaded(skel string) {
	if !on(p.cfg.DoWrites, true) {
		return
	}
	if err := atomicfile.Write(p.loadedMarkPath(), []byte(skelHash(skel)+"\n"), atomicfile.Options{Mode: configMode}); err != nil {
		p.log.Warn("could not record the loaded config", "path", p.loadedMarkPath(), "err", err)
	}
}

// running reports whether HAProxy answers: the master CLI with a current
// worker, and the worker's stats socket.
func (p *process) running(ctx context.Context) bool {
	if p.cfg.MasterSocketPath != "" {
		if _, err := p.workerPID(ctx); err != nil {
			p.log.Debug("haproxy master not answering", "err", err)
			return false
		}
	}
	if p.rt.Socket == "" {
		return p.cfg.MasterSocketPath != ""
	}
	_, err := p.rt.Run(ctx, "show info")
	if err != nil {
		p.log.Debug("haproxy stats socket not answering", "err", err)
	}
	return err == nil
}

// start runs HAProxy in master-worker mode as a daemon, so it outlives
// synapse, and waits until its worker serves the stats socket.
func (p *process) start(ctx context.Context) error {
	// The master CLI can reload and stop HAProxy: owner only, as the stats socket.
	args := []string{"-W", "-S", p.cfg.MasterSocketPath + ",mode,600", "-f", p.cfg.ConfigFilePath, "-D"}
	if p.cfg.PIDFile != "" {
		args = append(args, "-p", p.cfg.PIDFile)
	}
	before := p.masterPID()
	out, err := exec.CommandContext(ctx, p.cfg.Binary, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("haproxy: start %s %v: %v: %s", p.cfg.Binary, args, err, strings.TrimSpace(string(out)))
	}
	if p.startedHook != nil {
		p.startedHook()
	}
	// The master re-executes itself after forking the worker and refuses
	// connections meanwhile: poll until both sockets answer, unless the
	// master it started has died meanwhile (killed, OOM): waiting the 10 s
	// out would hold every Apply (the watchdog's restart holds the apply
	// lock), and then start another HAProxy all the same.
	deadline := time.Now().Add(10 * time.Second)
	for !p.running(ctx) {
		if pid := p.masterPID(); pid > 0 && pid != before && !processAlive(pid) {
			return fmt.Errorf("haproxy: started (master PID %d), then gone before answering on its sockets", pid)
		}
		if time.Now().After(deadline) {
			return errors.New("haproxy: started but not answering on its sockets after 10s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.log.Info("haproxy started", "config", p.cfg.ConfigFilePath, "master_socket", p.cfg.MasterSocketPath)
	return nil
}
