// Command embedded-etcd runs a real single-node etcd server (etcd's own
// embed package): the zero-setup registry for `make demo` and for a single
// host. Point nerve (etcd_endpoints) and synapse (discovery hosts) at its
// client URL. Production fleets use an external etcd cluster or ZooKeeper.
//
//	embedded-etcd -data-dir /var/lib/syncstack/etcd -client-url http://127.0.0.1:2379
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/syncstack/syncstack/registry/etcd/embedded"
)

func main() {
	fs := flag.NewFlagSet("embedded-etcd", flag.ContinueOnError)
	dir := fs.String("data-dir", "", "data directory (required; kept across restarts)")
	client := fs.String("client-url", "http://127.0.0.1:2379", "client URL to listen on")
	peer := fs.String("peer-url", "http://127.0.0.1:2380", "peer URL to listen on")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "embedded-etcd: -data-dir is required")
		os.Exit(2)
	}
	srv, err := embedded.Start(embedded.Config{Dir: *dir, ClientURL: *client, PeerURL: *peer, Fast: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedded-etcd:", err)
		os.Exit(1)
	}
	fmt.Printf("embedded etcd serving on %s (data in %s)\n", srv.ClientURL, *dir)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sigs:
	case err := <-srv.Err():
		fmt.Fprintln(os.Stderr, "embedded-etcd:", err)
		srv.Close()
		os.Exit(1)
	}
	srv.Close()
}
