package testserver

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ZooKeeperJar is where Debian's zookeeper package puts the server; its
// manifest carries the rest of the class path.
const ZooKeeperJar = "/usr/share/java/zookeeper.jar"

// ZKNode is one ZooKeeper server process.
type ZKNode struct {
	ID         int
	ClientPort int
	Addr       string // 127.0.0.1:ClientPort
	dir        string
	t          testing.TB

	serverProcess // Kill, Freeze, Thaw, Frozen, Running
}

// ZKEnsemble is a standalone server (one node) or a quorum on loopback.
type ZKEnsemble struct {
	Nodes []*ZKNode
}

// Servers lists the client addresses, for a ZooKeeper client.
func (e *ZKEnsemble) Servers() []string {
	out := make([]string, len(e.Nodes))
	for i, n := range e.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartZooKeeper starts a standalone ZooKeeper and waits until it answers ruok.
func StartZooKeeper(t testing.TB) *ZKEnsemble {
	return StartZKEnsemble(t, 1)
}

// StartZKEnsemble starts n servers (1 is standalone) on loopback ports below
// 32768 and waits until every node serves clients. Each is killed in
// t.Cleanup.
func StartZKEnsemble(t testing.TB, n int) *ZKEnsemble {
	t.Helper()
	return startZKEnsemble(t, n, 0, nil, 30*time.Second)
}

// startZKEnsemble starts voters voting and observers non-voting servers
// (peerType=observer, last in Nodes) with the extra zoo.cfg lines, and
// waits until every node serves clients.
func startZKEnsemble(t testing.TB, voters, observers int, extra []string, timeout time.Duration) *ZKEnsemble {
	t.Helper()
	checkJava(t)
	if voters < 1 || observers < 0 {
		t.Fatalf("testserver: %d voters and %d observers", voters, observers)
	}
	n := voters + observers
	e := &ZKEnsemble{}
	var servers []string
	for i := 1; i <= n; i++ {
		node := &ZKNode{ID: i, ClientPort: FreePort(t), dir: t.TempDir(), t: t}
		node.Addr = fmt.Sprintf("127.0.0.1:%d", node.ClientPort)
		e.Nodes = append(e.Nodes, node)
		if n > 1 {
			s := fmt.Sprintf("server.%d=127.0.0.1:%d:%d", i, FreePort(t), FreePort(t))
			if i > voters {
				s += ":observer"
			}
			servers = append(servers, s)
		}
	}
	for _, node := range e.Nodes {
		cfg := []string{
			"tickTime=200", "initLimit=25", "syncLimit=10",
			"dataDir=" + filepath.Join(node.dir, "data"),
			fmt.Sprintf("clientPort=%d", node.ClientPort),
			"clientPortAddress=127.0.0.1",
			"admin.enableServer=false",
			"4lw.commands.whitelist=ruok,srvr,stat,mntr",
			"maxClientCnxns=0",
		}
		cfg = append(cfg, extra...)
		if node.ID > voters {
			cfg = append(cfg, "peerType=observer")
		}
		cfg = append(cfg, servers...)
		if err := os.MkdirAll(filepath.Join(node.dir, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		if n > 1 {
			if err := os.WriteFile(filepath.Join(node.dir, "data", "myid"), []byte(fmt.Sprint(node.ID)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(node.dir, "zoo.cfg"), []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		node.Start()
		t.Cleanup(node.Kill)
	}
	deadline := time.Now().Add(timeout)
	for _, node := range e.Nodes {
		if err := node.WaitServing(time.Until(deadline)); err != nil {
			t.Fatalf("testserver: %v\n%s", err, e.logs())
		}
	}
	return e
}

func checkJava(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatalf("testserver: java is not installed: run `make test` (it apt-get installs zookeeper, which brings a JRE), or apt-get install zookeeper")
	}
	if _, err := os.Stat(ZooKeeperJar); err != nil {
		t.Fatalf("testserver: %s is missing: apt-get install zookeeper (make test does it)", ZooKeeperJar)
	}
}

func (e *ZKEnsemble) logs() string {
	var b strings.Builder
	for _, n := range e.Nodes {
		fmt.Fprintf(&b, "--- zookeeper node %d log tail:\n%s\n", n.ID, n.LogTail(30))
	}
	return b.String()
}

// Start (re)starts the node's process; it does not wait for it to serve.
func (n *ZKNode) Start() {
	n.start(n.t, "zookeeper", filepath.Join(n.dir, "zookeeper.log"),
		"java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Dzookeeper.admin.enableServer=false", "-cp", ZooKeeperJar,
		"org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(n.dir, "zoo.cfg"))
}

// WaitServing waits until the node answers srvr with a mode, which it does
// only once it serves clients (in an ensemble: after leader election).
func (n *ZKNode) WaitServing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		mode, err := n.Mode()
		if err == nil && mode != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("zookeeper node %d on %s not serving after %v (last: %v)", n.ID, n.Addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Mode returns "standalone", "leader" or "follower" from the srvr command.
func (n *ZKNode) Mode() (string, error) {
	out, err := FourLetter(n.Addr, "srvr")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m, ok := strings.CutPrefix(sc.Text(), "Mode: "); ok {
			return strings.TrimSpace(m), nil
		}
	}
	return "", fmt.Errorf("srvr: no mode in %q", out)
}

// Leader returns the node that is leader now, or nil.
func (e *ZKEnsemble) Leader() *ZKNode {
	for _, n := range e.Nodes {
		if !n.Running() || n.Frozen() {
			continue
		}
		if m, err := n.Mode(); err == nil && (m == "leader" || m == "standalone") {
			return n
		}
	}
	return nil
}

// LogTail returns the last lines of the node's log.
func (n *ZKNode) LogTail(lines int) string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "zookeeper.log"))
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// FourLetter sends a ZooKeeper four-letter command and returns the answer.
func FourLetter(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return b.String(), nil
}
