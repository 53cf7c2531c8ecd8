package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cnruntime "github.com/haproxytech/client-native/v5/runtime"

	"github.com/syncstack/syncstack/generators/haproxy"
	"github.com/syncstack/syncstack/internal/testserver"
)

// BenchmarkRuntimeClients applies the same runtime changes to one HAProxy
// backend of 1000 servers two ways: client-native v5's runtime client (one
// connection per command, as it is built) and syncstack's pipelined batch
// (haproxy.RuntimeClient: one connection, a reply per command). Phases:
// a weight per server, a drain then ready per server, and 200 servers added
// then removed (add, maint, del). Each phase runs three times per client;
// the median is reported, and the ratio.
func BenchmarkRuntimeClients(b *testing.B) {
	testserver.CheckHAProxy(b)
	const servers = 1000
	dir := b.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global\n    maxconn 1000\n    stats socket %s/stats.sock mode 600 level admin\n", dir)
	cfg.WriteString("defaults\n    mode http\n    timeout connect 1s\n    timeout client 10s\n    timeout server 10s\n")
	cfg.WriteString("backend bk\n    balance roundrobin\n")
	for i := range servers {
		fmt.Fprintf(&cfg, "    server s%04d 127.0.0.1:%d\n", i, 20000+i)
	}
	cfgPath, pidFile, statsSock := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "haproxy.pid"), filepath.Join(dir, "stats.sock")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("haproxy", "-W", "-S", filepath.Join(dir, "master.sock"), "-f", cfgPath, "-D", "-p", pidFile).CombinedOutput(); err != nil {
		b.Fatalf("haproxy: %v: %s", err, out)
	}
	testserver.KillHAProxyAtCleanup(b, pidFile)
	pipelined := haproxy.RuntimeClient{Socket: statsSock, Timeout: time.Minute}
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := pipelined.Run(ctx, "show info"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("haproxy stats socket not answering")
		}
	}
	var cn cnruntime.SingleRuntime
	if err := cn.Init(statsSock, 0, 0); err != nil {
		b.Fatal(err)
	}

	type phase struct {
		name string
		cmds func(round int) []string
	}
	name := func(i int) string { return fmt.Sprintf("bk/s%04d", i) }
	phases := []phase{
		{"weight", func(r int) (c []string) {
			for i := range servers {
				c = append(c, fmt.Sprintf("set server %s weight %d", name(i), 2+r%2))
			}
			return c
		}},
		{"drain+ready", func(int) (c []string) {
			for i := range servers {
				c = append(c, "set server "+name(i)+" state drain")
			}
			for i := range servers {
				c = append(c, "set server "+name(i)+" state ready")
			}
			return c
		}},
		{"add+remove-200", func(int) (c []string) {
			for i := range 200 {
				c = append(c, fmt.Sprintf("add server bk/n%03d 127.0.0.2:%d", i, 30000+i))
			}
			for i := range 200 {
				c = append(c, fmt.Sprintf("set server bk/n%03d state maint", i), fmt.Sprintf("del server bk/n%03d", i))
			}
			return c
		}},
	}
	// Success is an empty reply or one of these; client-native asks for
	// numeric severities ("[6]: New server registered.").
	ok := func(reply string) bool {
		r := strings.TrimSpace(reply)
		if len(r) > 4 && r[0] == '[' && r[2:4] == "]:" {
			r = strings.TrimSpace(r[4:])
		}
		return r == "" || r == "New server registered." || r == "Server deleted."
	}
	perCommand := func(cmds []string) error {
		for _, c := range cmds {
			reply, err := cn.ExecuteRaw(c)
			if err != nil {
				return fmt.Errorf("%s: %w", c, err)
			}
			if !ok(reply) {
				return fmt.Errorf("%s: %s", c, reply)
			}
		}
		return nil
	}
	batch := func(cmds []string) error {
		replies, err := pipelined.Run(ctx, cmds...)
		if err != nil {
			return err
		}
		for i, r := range replies {
			if !ok(r) {
				return fmt.Errorf("%s: %s", cmds[i], r)
			}
		}
		return nil
	}
	b.ResetTimer()
	stats := map[string]float64{}
	for _, p := range phases {
		var tCN, tBatch []time.Duration
		for round := range 3 {
			cmds := p.cmds(round)
			t0 := time.Now()
			if err := perCommand(cmds); err != nil {
				b.Fatalf("client-native %s: %v", p.name, err)
			}
			tCN = append(tCN, time.Since(t0))
			cmds = p.cmds(round + 1)
			t0 = time.Now()
			if err := batch(cmds); err != nil {
				b.Fatalf("pipelined %s: %v", p.name, err)
			}
			tBatch = append(tBatch, time.Since(t0))
		}
		cnMed, batchMed := percentile(tCN, 0.5), percentile(tBatch, 0.5)
		stats[p.name+"_commands"] = float64(len(p.cmds(0)))
		stats[p.name+"_client_native_ms"] = ms(cnMed)
		stats[p.name+"_pipelined_ms"] = ms(batchMed)
		stats[p.name+"_ratio"] = float64(cnMed) / float64(batchMed)
	}
	// One change alone: the latency a single drain sees.
	var tCN, tBatch []time.Duration
	for i := range 100 {
		c := fmt.Sprintf("set server %s weight %d", name(i), 5+i%2)
		t0 := time.Now()
		if err := perCommand([]string{c}); err != nil {
			b.Fatal(err)
		}
		tCN = append(tCN, time.Since(t0))
		c = fmt.Sprintf("set server %s weight %d", name(i), 6+i%2)
		t0 = time.Now()
		if err := batch([]string{c}); err != nil {
			b.Fatal(err)
		}
		tBatch = append(tBatch, time.Since(t0))
	}
	stats["single_client_native_p50_ms"] = ms(percentile(tCN, 0.5))
	stats["single_pipelined_p50_ms"] = ms(percentile(tBatch, 0.5))
	report(b, "runtime clients, 1000-server backend", stats)
}
