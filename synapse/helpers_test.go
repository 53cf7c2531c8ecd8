package synapse

import (
	"path"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// rawZK returns a function that writes raw data at a path (parents made),
// bypassing every check, as a hostile writer would.
func rawZK(t *testing.T, servers []string) func(path string, data []byte) {
	conn, _, err := zk.Connect(servers, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return func(p string, data []byte) {
		t.Helper()
		acc := ""
		for _, el := range strings.Split(strings.Trim(path.Dir(p), "/"), "/") {
			acc += "/" + el
			conn.Create(acc, nil, 0, zk.WorldACL(zk.PermAll))
		}
		if _, err := conn.Create(p, data, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatalf("create %s: %v", p, err)
		}
	}
}
