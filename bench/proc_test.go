package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
)

// buildBinary builds ./cmd/<name> without the race detector, as shipped.
func buildBinary(b *testing.B, name string) string {
	b.Helper()
	// SYNCSTACK_BENCH_SYNAPSE_BIN (or _NERVE_BIN) runs a binary built
	// elsewhere: the same benchmark against two builds, before and after.
	if bin := os.Getenv("SYNCSTACK_BENCH_" + strings.ToUpper(name) + "_BIN"); bin != "" {
		return bin
	}
	return testserver.BuildAsShipped(b, "../cmd/"+name)
}

// procSample is one reading of a process's resource use.
type procSample struct {
	at       time.Time
	cpuTicks int64 // utime + stime, in clock ticks
	rssKB    int64
	anonKB   int64 // RssAnon: the heap, stacks and runtime
	fileKB   int64 // RssFile: pages of the binary itself
	hwmKB    int64 // VmHWM: the kernel's high-water mark of RSS since the start
}

func sampleProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpuTicks = utime + stime
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		for key, dst := range map[string]*int64{"VmRSS:": &s.rssKB, "RssAnon:": &s.anonKB, "RssFile:": &s.fileKB, "VmHWM:": &s.hwmKB} {
			if v, ok := strings.CutPrefix(line, key); ok {
				*dst, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			}
		}
	}
	return s, nil
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

func cpuPercent(a, b procSample) float64 {
	return float64(b.cpuTicks-a.cpuTicks) / clockTicks / b.at.Sub(a.at).Seconds() * 100
}

func quick() bool { return os.Getenv("SYNCSTACK_BENCH_QUICK") != "" }

// verdict is 1 when measured ≤ target, else 0 (results.json holds numbers).
func verdict(measured, target float64) float64 {
	if measured <= target {
		return 1
	}
	return 0
}

func verdictWord(measured, target float64) string {
	if measured <= target {
		return "met"
	}
	return "missed"
}
