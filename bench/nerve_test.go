package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
)

// BenchmarkNerve100Services runs the nerve binary with 100 services, each
// with a TCP check every second against a local listener, registered in a
// real ZooKeeper, for 60s (10s quick), and reports its RSS and CPU.
// Targets (BENCHMARKS.md): ≤ 24 MB RSS, ≤ 2 % of one core.
func BenchmarkNerve100Services(b *testing.B) {
	const services = 100
	duration := 60 * time.Second
	if quick() {
		duration = 10 * time.Second
	}
	nerve := buildBinary(b, "nerve")
	zks := testserver.StartZooKeeper(b)

	port := testserver.StartTCPAcceptor(b)
	admin := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(b))
	var cfg strings.Builder
	// The profiles (SYNCSTACK_BENCH_PPROF) need admin.pprof.
	fmt.Fprintf(&cfg, "instance_id: bench-host\nadmin: {listen: %s, pprof: %t}\nservices:\n", admin, os.Getenv("SYNCSTACK_BENCH_PPROF") != "")
	for i := range services {
		fmt.Fprintf(&cfg, "  svc%03d:\n    host: 127.0.0.1\n    port: %d\n    check_interval: 1s\n    checks: [{type: tcp, timeout: 500ms}]\n    zk_hosts: [%s]\n    zk_path: /bench/svc%03d\n",
			i, port, zks.Nodes[0].Addr, i)
	}
	cfgPath := filepath.Join(b.TempDir(), "nerve.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(nerve, "-config", cfgPath, "-log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// Wait until every service is registered: the steady state is what counts.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n := registered(admin); n == services {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d services registered after 30s", registered(admin), services)
		}
		time.Sleep(100 * time.Millisecond)
	}

	b.ResetTimer()
	first, err := sampleProc(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	var rss []int64
	last := first
	for end := time.Now().Add(duration); time.Now().Before(end); {
		time.Sleep(time.Second) // the sampling interval, not a wait
		if last, err = sampleProc(cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		rss = append(rss, last.rssKB)
	}
	b.StopTimer()
	if dir := os.Getenv("SYNCSTACK_BENCH_PPROF"); dir != "" {
		// The heap profile in text: it ends with the runtime's MemStats.
		if resp, err := http.Get("http://" + admin + "/debug/pprof/heap?debug=1"); err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(filepath.Join(dir, "nerve-heap.txt"), data, 0o644)
		}
		if resp, err := http.Get("http://" + admin + "/debug/pprof/goroutine?debug=1"); err == nil {
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			os.WriteFile(filepath.Join(dir, "nerve-goroutines.txt"), data, 0o644)
		}
		// Which mappings the RSS is in (binary segments, heap, stacks).
		if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", cmd.Process.Pid)); err == nil {
			os.WriteFile(filepath.Join(dir, "nerve-smaps.txt"), data, 0o644)
		}
	}
	cpu := cpuPercent(first, last)
	maxRSS := slices.Max(rss)
	// At rest is the last sample (every service registered, checks
	// running); the peak is the kernel's high-water mark since nerve
	// started (registration of the 100 services included).
	const targetMB, targetCPU = 24, 2
	rest, hwm := float64(last.rssKB)/1024, float64(last.hwmKB)/1024
	report(b, "nerve/100-services", map[string]float64{
		"services": services, "duration-s": duration.Seconds(),
		"rss-rest-MB": rest, "rss-hwm-MB": hwm, "rss-max-sampled-MB": float64(maxRSS) / 1024,
		"rss-anon-MB": float64(last.anonKB) / 1024, "rss-file-MB": float64(last.fileKB) / 1024,
		"rss-target-MB": targetMB, "rss-rest-met": verdict(rest, targetMB), "rss-hwm-met": verdict(hwm, targetMB),
		"cpu-%core": cpu, "cpu-target-%core": targetCPU, "cpu-met": verdict(cpu, targetCPU),
	})
	b.Logf("nerve, %d services, 1s TCP checks, %v: RSS at rest %.1f MB (%s; %.1f MB anonymous, %.1f MB of the binary), peak (VmHWM) %.1f MB (%s), target %d MB; CPU %.2f %% of one core (%s, target %d %%)",
		services, duration, rest, verdictWord(rest, targetMB), float64(last.anonKB)/1024, float64(last.fileKB)/1024,
		hwm, verdictWord(hwm, targetMB), targetMB, cpu, verdictWord(cpu, targetCPU), targetCPU)
}

func registered(admin string) int {
	resp, err := http.Get("http://" + admin + "/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Services []struct {
			Registered bool `json:"registered"`
		} `json:"services"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0
	}
	n := 0
	for _, s := range st.Services {
		if s.Registered {
			n++
		}
	}
	return n
}
