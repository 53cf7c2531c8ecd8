package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdBinary is Debian's etcd-server (3.4). A cluster runs real processes,
// not the embedded server, so a member can be killed, frozen (SIGSTOP: a
// gray failure such as a stalled disk) and thawed independently of the test.
const EtcdBinary = "/usr/bin/etcd"

// EtcdCluster is a multi-member etcd cluster of separate processes on
// loopback.
type EtcdCluster struct {
	Members []*EtcdMember
}

// EtcdMember is one etcd server process of an EtcdCluster.
type EtcdMember struct {
	Name      string
	ClientURL string // http://127.0.0.1:port
	PeerURL   string // http://127.0.0.1:port

	args []string
	dir  string // holds data/ and etcd.log
	t    testing.TB

	serverProcess                  // Kill, Freeze, Thaw, Frozen, Running; its mu guards the fields below too
	cli           *clientv3.Client // status probes; made on first use
	id            uint64           // member ID, learned from a status answer
}

// StartEtcdCluster starts n etcd processes that form one cluster, waits
// until it has a leader and every member answers, and kills them in
// t.Cleanup. Heartbeat 50 ms and election timeout 500 ms make a leader
// change take about half a second. The server's gRPC keepalive policy is
// left at etcd's default (pings from a client more often than every 5 s are
// refused), so clients are tested against what production runs.
func StartEtcdCluster(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	if _, err := os.Stat(EtcdBinary); err != nil {
		t.Fatalf("testserver: %s is missing: apt-get install etcd-server (make test does it)", EtcdBinary)
	}
	c := &EtcdCluster{}
	var initial []string
	for i := 1; i <= n; i++ {
		m := &EtcdMember{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			dir:       t.TempDir(),
			t:         t,
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	token := fmt.Sprintf("testcluster-%d", FreePort(t))
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name,
			"--data-dir", filepath.Join(m.dir, "data"),
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--heartbeat-interval", "50",
			"--election-timeout", "500",
			"--logger", "zap",
			"--log-outputs", "stderr",
			// /debug/pprof/: a heap profile with ?gc=1 collects first, so
			// make scale reads the live heap (the cost per watch).
			"--enable-pprof",
		}
		t.Cleanup(m.stop)
	}
	for _, m := range c.Members {
		m.Start()
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatalf("testserver: %v\n%s", err, c.logs())
	}
	return c
}

// Endpoints lists the client URLs of all members.
func (c *EtcdCluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// Leader returns the member that running, unfrozen members name as leader,
// or nil when none does (or the named leader is not one of ours).
func (c *EtcdCluster) Leader() *EtcdMember {
	leader, _ := c.leader()
	return leader
}

func (c *EtcdCluster) leader() (*EtcdMember, error) {
	// Ask every member first, so that each one's ID is known, then take the
	// leader most of them name (a member just thawed can still believe in
	// an old term for a moment).
	var errs []error
	votes := map[uint64]int{}
	for _, m := range c.Members {
		if !m.answering() {
			continue
		}
		st, err := m.status(time.Second)
		switch {
		case err != nil:
			errs = append(errs, err)
		case st.Leader == 0:
			errs = append(errs, fmt.Errorf("%s has no leader", m.Name))
		default:
			votes[st.Leader]++
		}
	}
	var best uint64
	for id, n := range votes {
		if n > votes[best] {
			best = id
		}
	}
	if best != 0 {
		for _, l := range c.Members {
			if l.memberID() == best {
				return l, nil
			}
		}
		errs = append(errs, fmt.Errorf("leader %x is not a member this test knows (yet)", best))
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no member is running and unfrozen"))
	}
	return nil, errors.Join(errs...)
}

// WaitHealthy waits until a leader exists and every running member that is
// not frozen answers and names that leader (a frozen member cannot answer
// and is not waited for).
func (c *EtcdCluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := c.healthy()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd cluster not healthy after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *EtcdCluster) healthy() error {
	leader, err := c.leader()
	if err != nil {
		return err
	}
	if !leader.answering() {
		return fmt.Errorf("leader %s is frozen or stopped", leader.Name)
	}
	for _, m := range c.Members {
		if !m.answering() {
			continue
		}
		st, err := m.status(time.Second)
		if err != nil {
			return err
		}
		if st.Leader != leader.memberID() {
			return fmt.Errorf("%s names leader %x, not %s", m.Name, st.Leader, leader.Name)
		}
	}
	return nil
}

func (c *EtcdCluster) logs() string {
	var b strings.Builder
	for _, m := range c.Members {
		fmt.Fprintf(&b, "--- etcd %s log tail:\n%s\n", m.Name, m.LogTail(20))
	}
	return b.String()
}

// Start starts the member's process (again after Kill, with the same data
// directory and ports); it does not wait for it to serve.
func (m *EtcdMember) Start() {
	m.start(m.t, "etcd "+m.Name, filepath.Join(m.dir, "etcd.log"), append([]string{EtcdBinary}, m.args...)...)
}

// LogTail returns the last lines of the member's log.
func (m *EtcdMember) LogTail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "etcd.log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

func (m *EtcdMember) answering() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil && !m.frozen
}

func (m *EtcdMember) memberID() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.id
}

// status asks this member alone for its view of the cluster.
func (m *EtcdMember) status(timeout time.Duration) (*clientv3.StatusResponse, error) {
	m.mu.Lock()
	if m.cli == nil {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{m.ClientURL},
			DialTimeout: time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			m.mu.Unlock()
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		m.cli = cli
	}
	cli := m.cli
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	m.mu.Lock()
	m.id = st.Header.MemberId
	m.mu.Unlock()
	return st, nil
}

// stop kills the process and closes the probe client (t.Cleanup).
func (m *EtcdMember) stop() {
	m.Kill()
	m.mu.Lock()
	cli := m.cli
	m.cli = nil
	m.mu.Unlock()
	if cli != nil {
		cli.Close()
	}
}

// EtcdRevokesAfterStall reports whether EtcdBinary is an etcd whose leader,
// resumed after a stall longer than a lease TTL, revokes every lease it no
// longer owns (etcd-io/etcd#15247: 3.4 before 3.4.28, 3.5 before 3.5.11).
func EtcdRevokesAfterStall() bool {
	out, err := exec.Command(EtcdBinary, "--version").Output()
	return err == nil && revokesAfterStall(string(out))
}

// revokesAfterStall reads `etcd --version` output.
func revokesAfterStall(version string) bool {
	var major, minor, patch int
	for _, l := range strings.Split(version, "\n") {
		if v, ok := strings.CutPrefix(l, "etcd Version: "); ok {
			fmt.Sscanf(v, "%d.%d.%d", &major, &minor, &patch)
		}
	}
	return major == 3 && (minor < 4 || minor == 4 && patch < 28 || minor == 5 && patch < 11)
}
