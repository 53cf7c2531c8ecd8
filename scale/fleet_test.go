package scale

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/syncstack/syncstack/internal/testserver"
)

// synapseProc is one synapse process of the fleet.
type synapseProc struct {
	idx   int
	dir   string // config, log, out/
	out   string // file_output directory
	admin int
	cmd   *exec.Cmd
}

func (p *synapseProc) metricsURL() string { return fmt.Sprintf("http://127.0.0.1:%d/metrics", p.admin) }

// reads is the synapse's own count of registry reads that follow changes
// (ZooKeeper children/get/exists, etcd range), from one scrape; etcd's
// liveness probes (op "probe") are not reads of records.
func (p *synapseProc) reads() float64 {
	return sumMetric(p.metricsURL(), func(l string) bool {
		return strings.HasPrefix(l, "syncstack_registry_reads_total{") && !strings.Contains(l, `op="probe"`)
	})
}

// sumMetric sums the samples of the lines of a /metrics page that keep
// accepts (-1 when the page cannot be read).
func sumMetric(url string, keep func(line string) bool) float64 {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "#") || !keep(l) {
			continue
		}
		v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		sum += v
	}
	return sum
}

// startFleet starts n synapses, each watching services svc0000.. on cl;
// the first withHAProxy also drive a real HAProxy. Every process (and
// HAProxy) is killed in b.Cleanup, on failure too.
func startFleet(b *testing.B, bin string, cl cluster, hosts []string, n, services, withHAProxy int) []*synapseProc {
	root := b.TempDir()
	var fleet []*synapseProc
	for i := range n {
		p := &synapseProc{idx: i, dir: filepath.Join(root, fmt.Sprintf("s%03d", i)), admin: testserver.FreePort(b)}
		p.out = filepath.Join(p.dir, "out")
		if err := os.MkdirAll(p.out, 0o755); err != nil {
			b.Fatal(err)
		}
		var cfg strings.Builder
		fmt.Fprintf(&cfg, "id: scale-%03d\nadmin: {listen: \"127.0.0.1:%d\", pprof: true}\n", i, p.admin)
		// The deploy wave replaces backends at once on purpose: no panic hold.
		fmt.Fprintf(&cfg, "panic_threshold: 0\nfile_output: {output_directory: %s}\n", p.out)
		section := ""
		if i < withHAProxy {
			testserver.KillHAProxyAtCleanup(b, filepath.Join(p.dir, "haproxy.pid"))
			onInterrupt(func() { testserver.KillHAProxy(filepath.Join(p.dir, "haproxy.pid")) })
			fmt.Fprintf(&cfg, `haproxy:
  manage: true
  do_socket: true
  config_file_path: %[1]s/haproxy.cfg
  socket_file_path: %[1]s/stats.sock
  master_socket_path: %[1]s/master.sock
  pid_file: %[1]s/haproxy.pid
  global: [maxconn 1000]
  defaults: [mode http, timeout connect 1s, timeout client 10s, timeout server 10s]
`, p.dir)
			section = "\n    haproxy: {backend: [balance roundrobin]}"
		}
		cfg.WriteString("services:\n")
		hostList := strings.Join(hosts, ", ")
		for s := range services {
			fmt.Fprintf(&cfg, "  svc%04d:\n    discovery: {method: %s, hosts: [%s], path: /scale/svc%04d}%s\n", s, cl.name(), hostList, s, section)
		}
		// The nerves' registrations (nerve_test.go).
		fmt.Fprintf(&cfg, "  %s:\n    discovery: {method: %s, hosts: [%s], path: %s}%s\n", nerveService, cl.name(), hostList, nervePath, section)
		p.cmd = startDaemon(b, bin, filepath.Join(p.dir, "synapse"), cfg.String())
		fleet = append(fleet, p)
	}
	return fleet
}

// startDaemon writes config to base+".yaml" and starts bin with it, its
// output in base+".log"; the process is killed in b.Cleanup, and with
// the benchmark even on a crash of it.
func startDaemon(b *testing.B, bin, base, config string) *exec.Cmd {
	path := base + ".yaml"
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		b.Fatal(err)
	}
	log, err := os.Create(base + ".log")
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(bin, "-config", path, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", base, err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// ---- inotify: when each synapse wrote each service file

type fileEvent struct {
	syn     int
	service string
	at      time.Time
}

// notifier reports every file a synapse of the fleet renames into (or
// writes in) its output directory, with the time it learnt of it.
type notifier struct {
	fd     int
	wds    map[int32]int // watch descriptor → synapse
	events chan fileEvent
	wg     sync.WaitGroup
	stop   atomic.Bool
}

func newNotifier(b *testing.B, fleet []*synapseProc) *notifier {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	n := &notifier{fd: fd, wds: map[int32]int{}, events: make(chan fileEvent, 1<<16)}
	for _, p := range fleet {
		wd, err := syscall.InotifyAddWatch(fd, p.out, syscall.IN_MOVED_TO|syscall.IN_CLOSE_WRITE)
		if err != nil {
			b.Fatal(err)
		}
		n.wds[int32(wd)] = p.idx
	}
	n.wg.Add(1)
	go n.loop()
	wake := filepath.Join(fleet[0].out, ".wake")
	b.Cleanup(func() {
		// Closing the descriptor does not end a blocked read: a write in
		// a watched directory does, and the loop sees stop.
		n.stop.Store(true)
		os.WriteFile(wake, nil, 0o644)
		n.wg.Wait()
		syscall.Close(fd)
	})
	return n
}

func (n *notifier) loop() {
	defer n.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		k, err := syscall.Read(n.fd, buf)
		if err != nil || k <= 0 || n.stop.Load() {
			return
		}
		at := time.Now()
		for off := 0; off+syscall.SizeofInotifyEvent <= k; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			svc, ok := strings.CutSuffix(name, ".json")
			if !ok {
				continue
			}
			select {
			case n.events <- fileEvent{syn: n.wds[ev.Wd], service: svc, at: at}:
			default: // never block the reader; the waiters fall back to reading files
			}
		}
	}
}

// drain drops events already delivered.
func (n *notifier) drain() {
	for {
		select {
		case <-n.events:
		default:
			return
		}
	}
}

// backendsIn reads a file_output file: the backend names in it.
func backendsIn(p *synapseProc, service string) (map[string]bool, error) {
	data, err := os.ReadFile(filepath.Join(p.out, service+".json"))
	if err != nil {
		return nil, err
	}
	var recs []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(recs))
	for _, r := range recs {
		out[r.Name] = true
	}
	return out, nil
}

// waitAll waits until every synapse's file for service satisfies ok and
// returns when each was first seen to (inotify time). onEvent, when set, sees
// every file write meanwhile (the storms check them for lost backends).
func waitAll(fleet []*synapseProc, n *notifier, service string, t0 time.Time, timeout time.Duration, ok func(map[string]bool) bool, onEvent func(p *synapseProc, svc string)) ([]time.Duration, error) {
	done := make([]time.Duration, len(fleet))
	left := len(fleet)
	// No look at the files first: every write after t0 is an event in
	// n.events (drained before the registry write), timed when it happened.
	for i := range fleet {
		done[i] = -1
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	recheck := time.NewTicker(time.Second) // a dropped event must not stall the wait
	defer recheck.Stop()
	for left > 0 {
		select {
		case ev := <-n.events:
			p := fleet[ev.syn]
			if onEvent != nil {
				onEvent(p, ev.service)
			}
			if ev.service != service || done[ev.syn] >= 0 {
				continue
			}
			if set, err := backendsIn(p, service); err == nil && ok(set) {
				done[ev.syn] = ev.at.Sub(t0)
				left--
			}
		case <-recheck.C:
			for i, p := range fleet {
				if done[i] < 0 {
					if set, err := backendsIn(p, service); err == nil && ok(set) {
						done[i] = time.Since(t0)
						left--
					}
				}
			}
		case <-deadline.C:
			var late []int
			for i := range done {
				if done[i] < 0 {
					late = append(late, i)
				}
			}
			return done, fmt.Errorf("%d synapses never applied %s within %v: %v", len(late), service, timeout, late)
		}
	}
	return done, nil
}

// waitAllServices waits until every synapse wrote every service with at
// least min backends (the fleet's initial load).
func waitAllServices(fleet []*synapseProc, services, min int, timeout time.Duration) error {
	return waitEvery(fleet, "service files still incomplete", timeout, func(p *synapseProc) int {
		missing := 0
		for s := range services {
			if set, err := backendsIn(p, fmt.Sprintf("svc%04d", s)); err != nil || len(set) < min {
				missing++
			}
		}
		return missing
	})
}

// waitAllNerves waits until every synapse's nerve service holds all n
// nerves' instances.
func waitAllNerves(fleet []*synapseProc, n int, timeout time.Duration) error {
	every := allNerves(n)
	return waitEvery(fleet, "synapses still without every nerve", timeout, func(p *synapseProc) int {
		if set, err := backendsIn(p, nerveService); err != nil || !every(set) {
			return 1
		}
		return 0
	})
}

// waitEvery waits until missing counts 0 for every synapse.
func waitEvery(fleet []*synapseProc, what string, timeout time.Duration, missing func(*synapseProc) int) error {
	deadline := time.Now().Add(timeout)
	for {
		n := 0
		for _, p := range fleet {
			n += missing(p)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d %s after %v", n, what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var (
	interruptMu   sync.Mutex
	interruptFns  []func()
	interruptOnce sync.Once
)

// onInterrupt runs f if the benchmark is stopped by SIGINT or SIGTERM
// (Ctrl-C), which ends the process without its cleanups: synapses and the
// registry servers die with it (Pdeathsig), HAProxy runs as a daemon and
// must be killed here.
func onInterrupt(f func()) {
	interruptOnce.Do(func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			sig := <-ch
			interruptMu.Lock()
			for _, f := range interruptFns {
				f()
			}
			fmt.Fprintf(os.Stderr, "scale: %v: stopped every HAProxy; synapses and servers die with this process\n", sig)
			os.Exit(130)
		}()
	})
	interruptMu.Lock()
	interruptFns = append(interruptFns, f)
	interruptMu.Unlock()
}
