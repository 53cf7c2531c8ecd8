package scale

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
	"github.com/syncstack/syncstack/registry"
)

type params struct {
	N, S, B, Writes, Rounds, HAProxy, R int
	Nerves                              int // nerve processes registering during the storms
	Registries                          []string
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func load() params {
	p := params{
		N: envInt("SYNCSTACK_SCALE_N", 50),
		S: envInt("SYNCSTACK_SCALE_S", 200),
		B: envInt("SYNCSTACK_SCALE_B", 3),
		// 100 writes a round: a p99 of 40 was their maximum.
		Writes:  envInt("SYNCSTACK_SCALE_WRITES", 100),
		Rounds:  envInt("SYNCSTACK_SCALE_ROUNDS", 3),
		HAProxy: envInt("SYNCSTACK_SCALE_HAPROXY", 3),
		R:       envInt("SYNCSTACK_SCALE_R", 20),
	}
	p.Nerves = envInt("SYNCSTACK_SCALE_NERVES", p.N)
	p.Registries = strings.Split("zookeeper,etcd", ",")
	if v := os.Getenv("SYNCSTACK_SCALE_REGISTRIES"); v != "" {
		p.Registries = strings.Split(v, ",")
	}
	return p
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func record(name string, port int) []byte {
	data, _ := registry.Instance{Host: "127.0.0.1", Port: port, Name: name}.Encode()
	return data
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return -1
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return ms(s[max(0, min(i, len(s)-1))])
}

func readsOf(fleet []*synapseProc) []float64 {
	out := make([]float64, len(fleet))
	testserver.Parallel(len(fleet), 8, func(i int) error { out[i] = fleet[i].reads(); return nil })
	return out
}

// perSynapse turns two read snapshots into per-synapse deltas divided by
// div: mean and max.
func perSynapse(a, b []float64, div float64) (mean, worst float64) {
	for i := range a {
		d := (b[i] - a[i]) / div
		mean += d
		worst = max(worst, d)
	}
	return mean / float64(len(a)), worst
}

// BenchmarkFleet is `make scale`.
func BenchmarkFleet(b *testing.B) {
	p := load()
	// SYNCSTACK_SCALE_BIN: a synapse binary built elsewhere (else built
	// here from this tree, without the race detector, as shipped).
	bin := os.Getenv("SYNCSTACK_SCALE_BIN")
	if bin == "" {
		bin = testserver.BuildAsShipped(b, "../cmd/synapse")
	}
	results := map[string]any{
		"params":  p,
		"machine": machine(),
		"started": time.Now().UTC().Format(time.RFC3339),
	}
	for _, reg := range p.Registries {
		b.Run(reg, func(b *testing.B) {
			r := runRegistry(b, reg, bin, p)
			results[reg] = r
		})
	}
	results["finished"] = time.Now().UTC().Format(time.RFC3339)
	if path := os.Getenv("SYNCSTACK_SCALE_JSON"); path != "" {
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
			b.Error(err)
		}
	}
}

func machine() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m["mem"] = strings.Join(strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:], " ")
	}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m["kernel"] = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("etcd", "--version").Output(); err == nil {
		m["etcd"] = strings.TrimPrefix(strings.SplitN(string(out), "\n", 2)[0], "etcd Version: ")
	}
	if out, err := exec.Command("haproxy", "-v").Output(); err == nil {
		m["haproxy"] = strings.Fields(string(out))[2]
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "zookeeper").Output(); err == nil {
		m["zookeeper"] = string(out)
	}
	return m
}

type roundResult struct {
	Load string `json:"loadavg"`
	// fan-out: per write, when the last synapse had applied it
	FanoutLasts     []float64 `json:"fanout_last_ms"` // every write's last synapse
	FanoutLastP50   float64   `json:"fanout_last_p50_ms"`
	FanoutLastP99   float64   `json:"fanout_last_p99_ms"`
	FanoutLastMax   float64   `json:"fanout_last_max_ms"`
	FanoutEachP50   float64   `json:"fanout_each_synapse_p50_ms"`
	FanoutServerCPU float64   `json:"fanout_server_cpu_pct"`
	// CPU the synapses spent per write, each (ms): what N of them cost a
	// 2-core machine per write explains the tail of "the last one".
	FanoutSynapseCPU float64 `json:"fanout_synapse_cpu_ms_per_write_each"`
	// deploy waves
	Waves map[string]waveResult `json:"waves"`
	// storms
	Storms map[string]stormResult `json:"storms"`
}

type waveResult struct {
	Changes          int     `json:"changes"`
	Took             float64 `json:"took_ms"`
	ReadsPerChange   float64 `json:"reads_per_change_per_synapse_mean"`
	ReadsPerChangeMx float64 `json:"reads_per_change_per_synapse_max"`
	ServerReads      float64 `json:"server_reads_delta"`
	ServerCPU        float64 `json:"server_cpu_pct"`
	ServerRSSMB      float64 `json:"server_rss_mb"`
	Watches          float64 `json:"server_watches"`
	Load             string  `json:"loadavg"`
}

type stormResult struct {
	QuorumAfter   float64 `json:"quorum_after_ms"` // from the fault
	CurrentAfterQ float64 `json:"all_current_after_quorum_ms"`
	ReadsMean     float64 `json:"reads_per_synapse_mean"`
	ReadsMax      float64 `json:"reads_per_synapse_max"`
	RelistSize    float64 `json:"one_relist_reads"`
	LostBackends  int     `json:"outputs_missing_a_stable_backend"`
	// The nerves' registrations: outputs seen without one of them, and
	// what the nerves did (re-registrations after a lost session or
	// lease, and those losses).
	NervesMissing        int       `json:"outputs_missing_a_nerve_instance"`
	NerveReregistrations float64   `json:"nerve_reregistrations"`
	NerveSessionLosses   float64   `json:"nerve_session_losses"`
	ConnsCurve           []float64 `json:"conns_every_250ms"`
	AllReconnected       float64   `json:"all_reconnected_after_quorum_ms"`
	Load                 string    `json:"loadavg"`
}

type registryResult struct {
	Synapses     int                `json:"synapses"`
	Tier         []string           `json:"read_tier,omitempty"`
	Services     int                `json:"services"`
	InitialLoad  float64            `json:"initial_load_s"`
	Base         serverStats        `json:"server_no_synapses"`
	Bare         serverStats        `json:"server_n_bare_sessions"`
	Fleet        serverStats        `json:"server_n_synapses"`
	PerConnKB    float64            `json:"server_heap_per_connection_kb"`
	PerSynapseKB float64            `json:"server_heap_per_synapse_kb"`
	PerWatchB    float64            `json:"server_heap_per_watch_bytes"`
	WatchesPer   float64            `json:"watches_per_synapse"`
	IdleCPU      float64            `json:"server_cpu_idle_fleet_pct"`
	Rounds       []roundResult      `json:"rounds"`
	Summary      map[string]float64 `json:"summary"`
}

func runRegistry(b *testing.B, reg, bin string, p params) *registryResult {
	var cl cluster
	switch reg {
	case "zookeeper":
		cl = startZK(b, 1)
	case "etcd":
		cl = startEtcd(b)
	default:
		b.Fatalf("unknown registry %q", reg)
	}
	res := &registryResult{Synapses: p.N, Services: p.S, Summary: map[string]float64{}}
	key := func(svc int, name string) string { return fmt.Sprintf("/scale/svc%04d/%s", svc, name) }
	// Seed: S services × B backends, and the R backends of the deploy wave in svc0000.
	if err := testserver.Parallel(p.S*p.B, 16, func(i int) error {
		return cl.put(key(i/p.B, fmt.Sprintf("b%d", i%p.B)), record(fmt.Sprintf("b%d", i%p.B), 20000+i))
	}); err != nil {
		b.Fatal(err)
	}
	wave := func(gen, k int) string { return fmt.Sprintf("w%02d-g%d", k, gen) }
	for k := range p.R {
		if err := cl.put(key(0, wave(0, k)), record(wave(0, k), 30000+k)); err != nil {
			b.Fatal(err)
		}
	}
	res.Base = cl.stats()
	closeBare, err := cl.bare(p.N)
	if err != nil {
		b.Fatal(err)
	}
	res.Bare = cl.stats()
	closeBare()
	res.PerConnKB = (res.Bare.HeapKB - res.Base.HeapKB) / float64(p.N)

	start := time.Now()
	hosts := cl.hosts()
	if os.Getenv("SYNCSTACK_SCALE_TIER") != "" {
		// Every synapse reads through the read tier only.
		hosts = cl.tier()
		res.Tier = hosts
	}
	// The nerves register through the voters (they write), as on a host.
	nerves := startNerves(b, cl, cl.hosts(), p.Nerves)
	fleet := startFleet(b, bin, cl, hosts, p.N, p.S, p.HAProxy)
	if err := waitAllServices(fleet, p.S, p.B, 10*time.Minute); err != nil {
		b.Fatal(err)
	}
	if err := waitAllNerves(fleet, p.Nerves, 2*time.Minute); err != nil {
		b.Fatal(err)
	}
	res.InitialLoad = time.Since(start).Seconds()
	// The fleet idle: server CPU over a 5 s window (a measurement
	// window, not a wait for a condition).
	idle0t, idleAt := procTicks(cl.pids()), time.Now()
	window := time.NewTimer(5 * time.Second)
	<-window.C
	idle1t := procTicks(cl.pids())
	res.IdleCPU = cpuPct(idle0t, idle1t, time.Since(idleAt))
	res.Fleet = cl.stats()
	dWatch := res.Fleet.Watches - res.Base.Watches
	res.WatchesPer = dWatch / float64(p.N)
	res.PerSynapseKB = (res.Fleet.HeapKB - res.Base.HeapKB) / float64(p.N)
	if dWatch > 0 {
		res.PerWatchB = (res.Fleet.HeapKB - res.Base.HeapKB - res.PerConnKB*float64(p.N)) * 1024 / dWatch
	}
	fmt.Printf("%s: %d synapses × %d services loaded in %.1fs (load %s); server heap %.0f→%.0f KB, watches %.0f, conns %d\n",
		reg, p.N, p.S, res.InitialLoad, loadavg(), res.Base.HeapKB, res.Fleet.HeapKB, res.Fleet.Watches, res.Fleet.Conns)

	nt := newNotifier(b, fleet)
	stable := func(set map[string]bool) bool {
		for k := range p.B {
			if !set[fmt.Sprintf("b%d", k)] {
				return false
			}
		}
		return true
	}
	gen := 0
	for round := range p.Rounds {
		rr := roundResult{Load: loadavg(), Waves: map[string]waveResult{}, Storms: map[string]stormResult{}}

		// Fan-out.
		nt.drain()
		var lasts, each []time.Duration
		s0, at0, f0 := cl.stats(), time.Now(), fleetTicks(fleet)
		for w := range p.Writes {
			svc := 1 + (round*p.Writes+w)%(p.S-1)
			name := fmt.Sprintf("f%d-%d", round, w)
			nt.drain()
			t0 := time.Now()
			if err := cl.put(key(svc, name), record(name, 40000+w)); err != nil {
				b.Fatal(err)
			}
			done, err := waitAll(fleet, nt, fmt.Sprintf("svc%04d", svc), t0, 30*time.Second, func(s map[string]bool) bool { return s[name] }, nil)
			if err != nil {
				b.Fatal(err)
			}
			lasts = append(lasts, slices.Max(done))
			each = append(each, done...)
		}
		s1 := cl.stats()
		rr.FanoutServerCPU = cpuPct(s0.CPUTicks, s1.CPUTicks, time.Since(at0))
		rr.FanoutSynapseCPU = float64(fleetTicks(fleet)-f0) * 10 / float64(p.Writes*p.N)
		rr.FanoutLastP50, rr.FanoutLastP99, rr.FanoutLastMax = pct(lasts, 50), pct(lasts, 99), pct(lasts, 100)
		for _, d := range lasts {
			rr.FanoutLasts = append(rr.FanoutLasts, ms(d))
		}
		rr.FanoutEachP50 = pct(each, 50)
		fmt.Printf("%s round %d fan-out: last of %d synapses p50 %.1f p99 %.1f max %.1f ms (each p50 %.1f); synapse CPU %.1f ms per write each; server CPU %.0f%%; load %s\n",
			reg, round, p.N, rr.FanoutLastP50, rr.FanoutLastP99, rr.FanoutLastMax, rr.FanoutEachP50, rr.FanoutSynapseCPU, rr.FanoutServerCPU, rr.Load)

		// Deploy waves: every wave backend deregistered and registered
		// again under a new name (as nerve's sequential nodes are), paced
		// and as a burst.
		for _, mode := range []string{"paced", "burst"} {
			nt.drain()
			old := gen
			gen++
			r0, st0, t0 := readsOf(fleet), cl.stats(), time.Now()
			change := func(k int) error {
				if err := cl.del(key(0, wave(old, k))); err != nil {
					return err
				}
				return cl.put(key(0, wave(gen, k)), record(wave(gen, k), 30000+k))
			}
			if mode == "paced" {
				for k := range p.R {
					if err := change(k); err != nil {
						b.Fatal(err)
					}
					// The pace of a rolling restart (a deploy step), not a wait for a condition.
					time.Sleep(50 * time.Millisecond)
				}
			} else if err := testserver.Parallel(p.R, p.R, change); err != nil {
				b.Fatal(err)
			}
			want := func(s map[string]bool) bool {
				for k := range p.R {
					if !s[wave(gen, k)] || s[wave(old, k)] {
						return false
					}
				}
				return stable(s)
			}
			if _, err := waitAll(fleet, nt, "svc0000", t0, 60*time.Second, want, nil); err != nil {
				b.Fatal(err)
			}
			took := time.Since(t0)
			r1, st1 := readsOf(fleet), cl.stats()
			w := waveResult{Changes: 2 * p.R, Took: ms(took), ServerReads: st1.Reads - st0.Reads,
				ServerCPU: cpuPct(st0.CPUTicks, st1.CPUTicks, took), ServerRSSMB: st1.RSSKB / 1024, Watches: st1.Watches, Load: loadavg()}
			w.ReadsPerChange, w.ReadsPerChangeMx = perSynapse(r0, r1, float64(2*p.R))
			rr.Waves[mode] = w
			fmt.Printf("%s round %d wave %s: %d changes in %.0f ms; reads per change per synapse mean %.2f max %.2f; server reads Δ %.0f, CPU %.0f%%\n",
				reg, round, mode, w.Changes, w.Took, w.ReadsPerChange, w.ReadsPerChangeMx, w.ServerReads, w.ServerCPU)
		}

		// Storms.
		for _, kind := range []string{"leader-kill", "full-restart"} {
			st := storm(b, cl, fleet, nerves, nt, p, kind, fmt.Sprintf("s%d-%s", round, kind), stable)
			rr.Storms[kind] = st
			fmt.Printf("%s round %d %s: quorum after %.0f ms; every synapse current %.0f ms after quorum; reads/synapse mean %.0f max %.0f (one relist %.0f); lost %d; nerve instances missing %d (nerves: %.0f re-registrations, %.0f session/lease losses); reconnected %.0f ms after quorum; conns %v\n",
				reg, round, kind, st.QuorumAfter, st.CurrentAfterQ, st.ReadsMean, st.ReadsMax, st.RelistSize, st.LostBackends, st.NervesMissing, st.NerveReregistrations, st.NerveSessionLosses, st.AllReconnected, st.ConnsCurve)
		}
		res.Rounds = append(res.Rounds, rr)
	}
	summarize(res)
	fmt.Printf("%s fan-out, every round's writes pooled (%.0f): last of %d synapses p50 %.1f p99 %.1f ms\n",
		reg, res.Summary["fanout_writes_pooled"], p.N, res.Summary["fanout_last_p50_pooled_ms"], res.Summary["fanout_last_p99_pooled_ms"])
	return res
}

// procTicks is the CPU pids used so far (clock ticks).
func procTicks(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		t, _ := procSample(pid)
		sum += t
	}
	return sum
}

// fleetTicks is the CPU the fleet's synapses used so far (clock ticks).
func fleetTicks(fleet []*synapseProc) int64 {
	var sum int64
	for _, p := range fleet {
		t, _ := procSample(p.cmd.Process.Pid)
		sum += t
	}
	return sum
}

func cpuPct(a, b int64, d time.Duration) float64 {
	return float64(b-a) / 100 / d.Seconds() * 100
}

// storm kills the leader (or every server), brings quorum back, and
// measures the fleet's return: connections over time, reads, time until
// every synapse applied a write made once quorum is back, and any output
// that lost a backend that stayed registered.
func storm(b *testing.B, cl cluster, fleet []*synapseProc, nerves []*nerveProc, nt *notifier, p params, kind, marker string, stable func(map[string]bool) bool) stormResult {
	st := stormResult{Load: loadavg()}
	nt.drain()
	r0 := readsOf(fleet)
	rereg0, losses0 := nerveTotals(nerves, "syncstack_registry_reregistrations_total"), nerveTotals(nerves, "syncstack_registry_session_losses_total")
	everyNerve := allNerves(len(nerves))

	// Connections every 250 ms, from the fault until every synapse is back.
	stop := make(chan struct{})
	var curve []float64
	var mu sync.Mutex
	var samplerDone sync.WaitGroup
	samplerDone.Add(1)
	go func() {
		defer samplerDone.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			mu.Lock()
			curve = append(curve, float64(established(cl.ports())))
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()

	t0 := time.Now()
	var restart func()
	switch kind {
	case "leader-kill":
		r, err := cl.killLeader()
		if err != nil {
			b.Fatal(err)
		}
		restart = r
	default:
		cl.killAll()
		cl.startAll()
	}
	if err := cl.waitQuorum(90 * time.Second); err != nil {
		b.Fatal(err)
	}
	tq := time.Now()
	st.QuorumAfter = ms(tq.Sub(t0))
	if err := cl.put(fmt.Sprintf("/scale/svc%04d/%s", 1, marker), record(marker, 45000)); err != nil {
		b.Fatal(err)
	}
	lost := 0
	check := func(p *synapseProc, svc string) {
		set, err := backendsIn(p, svc)
		switch {
		case err != nil:
		case svc == nerveService:
			if !everyNerve(set) {
				st.NervesMissing++
			}
		case !stable(set):
			lost++
		}
	}
	done, err := waitAll(fleet, nt, "svc0001", tq, 60*time.Second, func(s map[string]bool) bool { return s[marker] }, check)
	if err != nil {
		b.Fatal(err)
	}
	st.CurrentAfterQ = ms(slices.Max(done))
	if restart != nil {
		restart()
		if err := cl.waitQuorum(60 * time.Second); err != nil {
			b.Fatal(err)
		}
	}
	// The connection curve goes on for a while after every synapse is
	// current: reconnections the fleet did not need to be current.
	settle := time.NewTimer(3 * time.Second)
	<-settle.C
	close(stop)
	samplerDone.Wait()
	st.ConnsCurve = curve
	// Reconnected: the first sample after quorum at the final count.
	final := curve[len(curve)-1]
	skip := int(tq.Sub(t0) / (250 * time.Millisecond))
	for i := min(skip, len(curve)-1); i < len(curve); i++ {
		if curve[i] >= final {
			st.AllReconnected = float64(i)*250 - st.QuorumAfter
			break
		}
	}
	r1 := readsOf(fleet)
	st.ReadsMean, st.ReadsMax = perSynapse(r0, r1, 1)
	// One relist: ZooKeeper lists every service and reads every child
	// (a new session); etcd lists every prefix.
	switch cl.name() {
	case "zookeeper":
		st.RelistSize = float64(p.S + p.S*p.B + p.R)
	default:
		st.RelistSize = float64(p.S)
	}
	// Every output holds every stable backend and every nerve at the end, too.
	for _, sp := range fleet {
		for s := range p.S {
			check(sp, fmt.Sprintf("svc%04d", s))
		}
		if len(nerves) > 0 {
			check(sp, nerveService)
		}
	}
	st.NerveReregistrations = nerveTotals(nerves, "syncstack_registry_reregistrations_total") - rereg0
	st.NerveSessionLosses = nerveTotals(nerves, "syncstack_registry_session_losses_total") - losses0
	st.LostBackends = lost
	return st
}

func summarize(r *registryResult) {
	var p99s, waveZK, waveMax, current, reads []float64
	var pooled []time.Duration // every round's writes
	for _, rr := range r.Rounds {
		p99s = append(p99s, rr.FanoutLastP99)
		for _, v := range rr.FanoutLasts {
			pooled = append(pooled, time.Duration(v*float64(time.Millisecond)))
		}
		for _, w := range rr.Waves {
			waveZK = append(waveZK, w.ReadsPerChange)
			waveMax = append(waveMax, w.ReadsPerChangeMx)
		}
		if s, ok := rr.Storms["full-restart"]; ok {
			current = append(current, s.CurrentAfterQ)
			reads = append(reads, s.ReadsMax/max(s.RelistSize, 1))
		}
	}
	put := func(name string, v []float64) {
		if len(v) > 0 {
			r.Summary[name+"_min"], r.Summary[name+"_max"] = slices.Min(v), slices.Max(v)
		}
	}
	put("fanout_last_p99_ms", p99s)
	if len(pooled) > 0 {
		r.Summary["fanout_last_p50_pooled_ms"], r.Summary["fanout_last_p99_pooled_ms"] = pct(pooled, 50), pct(pooled, 99)
		r.Summary["fanout_writes_pooled"] = float64(len(pooled))
	}
	put("wave_reads_per_change_mean", waveZK)
	put("wave_reads_per_change_worst_synapse", waveMax)
	put("full_restart_current_after_quorum_ms", current)
	put("full_restart_reads_in_relists", reads)
}
