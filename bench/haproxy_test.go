package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
)

// procState is what HAProxy's master CLI says of its processes (`show proc`).
type procState struct {
	master, worker  int // PIDs
	reloads, failed int // the master's reload count and, of those, the failed ones
}

// showProc parses `show proc` from a master socket:
//
//	#<PID>  <type>  <reloads>      <uptime>     <version>
//	20690   master  1 [failed: 0]  0d00h00m01s  2.6.12
//	# workers
//	20739   worker  0              0d00h00m01s  2.6.12
func showProc(masterSock string) (procState, error) {
	out, err := testserver.HAProxyCommand(masterSock, "show proc")
	if err != nil {
		return procState{}, err
	}
	return parseShowProc(out)
}

func parseShowProc(out string) (procState, error) {
	var st procState
	section := ""
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case strings.HasPrefix(l, "#<PID>"):
			section = "master"
		case strings.HasPrefix(l, "#"):
			section = strings.TrimSpace(strings.TrimPrefix(l, "#"))
		case len(f) >= 3 && section == "master" && f[1] == "master":
			st.master, _ = strconv.Atoi(f[0])
			st.reloads, _ = strconv.Atoi(f[2])
			if len(f) >= 5 && f[3] == "[failed:" {
				st.failed, _ = strconv.Atoi(strings.TrimSuffix(f[4], "]"))
			}
		case len(f) >= 2 && section == "workers" && f[1] == "worker" && st.worker == 0:
			st.worker, _ = strconv.Atoi(f[0])
		}
	}
	// A master in wait mode after a failed start has no worker; its
	// reload count still counts.
	if st.master == 0 {
		return st, fmt.Errorf("show proc: no master in %q", out)
	}
	return st, nil
}

// reloadCounter counts HAProxy's reloads as its master sees them, so that a
// reload synapse did not count (a failed one, one it did not know it
// caused) and a restart of HAProxy (a new master) count too. It polls
// every 50 ms so that a restart between two reads of count is not missed.
type reloadCounter struct {
	sock string

	mu       sync.Mutex
	last     procState
	reloads  int // every reload, failed ones included
	failed   int
	restarts int // a new master: HAProxy started again
}

func newReloadCounter(b testing.TB, masterSock string) *reloadCounter {
	c := &reloadCounter{sock: masterSock}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c.poll()
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	b.Cleanup(func() { close(stop); <-done })
	return c
}

// poll reads show proc once; while the master reloads it refuses
// connections, and the next poll catches up.
func (c *reloadCounter) poll() {
	st, err := showProc(c.sock)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.last.master == 0:
	case st.master != c.last.master:
		c.restarts++
		c.reloads += st.reloads
		c.failed += st.failed
	default:
		c.reloads += st.reloads - c.last.reloads
		c.failed += st.failed - c.last.failed
	}
	c.last = st
}

// total is reloads plus restarts since the counter started, read now.
func (c *reloadCounter) total() int {
	c.poll()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloads + c.restarts
}

// counts are the parts of total.
func (c *reloadCounter) counts() (reloads, failed, restarts int) {
	c.poll()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reloads, c.failed, c.restarts
}

// started reports whether the counter has seen HAProxy's master.
func (c *reloadCounter) started() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.master != 0
}

func TestParseShowProc(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      procState
		err       bool
	}{
		{"one worker", "#<PID>          <type>          <reloads>       <uptime>        <version>\n20690           master          1 [failed: 0]   0d00h00m01s     2.6.12\n# workers\n20739           worker          0               0d00h00m01s     2.6.12\n# programs\n\n",
			procState{master: 20690, worker: 20739, reloads: 1}, false},
		{"failed reloads, an old worker", "#<PID>          <type>          <reloads>       <uptime>        <version>\n1 master 7 [failed: 2] 0d 2.6\n# workers\n9 worker 0 0d 2.6\n# old workers\n8 worker 1 0d 2.6\n",
			procState{master: 1, worker: 9, reloads: 7, failed: 2}, false},
		{"no worker (master in wait mode)", "#<PID> <type> <reloads> <uptime> <version>\n1 master 3 [failed: 1] 0d 2.6\n# workers\n# programs\n", procState{master: 1, reloads: 3, failed: 1}, false},
		{"not a master CLI", "Unknown command.\n", procState{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseShowProc(tc.out)
			if (err != nil) != tc.err || (!tc.err && got != tc.want) {
				t.Errorf("got %+v, %v; want %+v (error %v)", got, err, tc.want, tc.err)
			}
		})
	}
}

// The counter sees what synapse's own counter cannot: a reload nobody
// asked synapse for, a failed one, and a new master (HAProxy restarted).
func TestReloadCounter(t *testing.T) {
	testserver.CheckHAProxy(t)
	dir := t.TempDir()
	cfgPath, pidFile, master := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "haproxy.pid"), filepath.Join(dir, "master.sock")
	good := "global\n    maxconn 100\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\nbackend bk\n    server s 127.0.0.1:1\n"
	write := func(body string) {
		if err := os.WriteFile(cfgPath, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := func() {
		write(good)
		if out, err := exec.Command("haproxy", "-W", "-S", master, "-f", cfgPath, "-D", "-p", pidFile).CombinedOutput(); err != nil {
			t.Fatalf("haproxy: %v: %s", err, out)
		}
	}
	start()
	testserver.KillHAProxyAtCleanup(t, pidFile)
	c := newReloadCounter(t, master)
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				r, f, s := c.counts()
				t.Fatalf("%s: reloads %d, failed %d, restarts %d", what, r, f, s)
			}
		}
	}
	waitFor("master seen", c.started)
	reload := func() {
		if _, err := testserver.HAProxyCommand(master, "reload"); err != nil {
			t.Fatal(err)
		}
	}
	reload()
	waitFor("one reload", func() bool { return c.total() == 1 })
	write(good + "    no-such-directive\n")
	reload()
	waitFor("a failed reload", func() bool { r, f, _ := c.counts(); return r == 2 && f == 1 })
	// A new master: HAProxy stopped and started again.
	st, err := showProc(master)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.master, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(st.worker, syscall.SIGKILL)
	for testserver.Alive(st.master) {
		time.Sleep(10 * time.Millisecond)
	}
	os.Remove(master)
	start()
	waitFor("a restart", func() bool { _, _, s := c.counts(); return s == 1 && c.total() == 3 })
}
