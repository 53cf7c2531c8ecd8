package registrywatch

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/syncstack/syncstack/watchers"
)

func init() {
	watchers.Register("zookeeper", func() watchers.MethodConfig { return &ZooKeeperConfig{} })
	watchers.Register("etcd", func() watchers.MethodConfig { return &EtcdConfig{} })
}

// ZooKeeperConfig is method zookeeper's keys.
type ZooKeeperConfig struct {
	// Hosts are the ZooKeeper servers.
	Hosts []string `yaml:"hosts"`
	// Path is the node nerve registers the service's instances under.
	Path string `yaml:"path"`
}

// Finalize implements watchers.MethodConfig.
func (c *ZooKeeperConfig) Finalize(ch *watchers.Check) {
	if len(c.Hosts) == 0 {
		ch.Problem("hosts", "missing: the ZooKeeper servers")
	}
	checkPath(ch, c.Path)
}

// NewWatcher implements watchers.MethodConfig.
func (c *ZooKeeperConfig) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	return newWatcher(d, "zookeeper", c.Hosts, c.Path)
}

// RegistryPath implements watchers.RegistryPather.
func (c *ZooKeeperConfig) RegistryPath() ([]string, string) { return c.Hosts, c.Path }

// EtcdConfig is method etcd's keys.
type EtcdConfig struct {
	// Hosts are the etcd endpoints.
	Hosts []string `yaml:"hosts"`
	// Host and Port: Airbnb's single etcd endpoint (port 0: 2379).
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// Path is the prefix nerve registers the service's instances under.
	Path string `yaml:"path"`
}

// Finalize implements watchers.MethodConfig: Airbnb's host and port join
// the endpoints.
func (c *EtcdConfig) Finalize(ch *watchers.Check) {
	if c.Host != "" {
		port := c.Port
		if port == 0 {
			port = 2379
		}
		// No scheme: TLS or not follows the client's etcd_security.
		c.Hosts = append(c.Hosts, net.JoinHostPort(c.Host, strconv.Itoa(port)))
		c.Host, c.Port = "", 0 // joined once, however often Finalize runs
	}
	if len(c.Hosts) == 0 {
		ch.Problem("hosts", "missing: the etcd endpoints (or host and port)")
	}
	checkPath(ch, c.Path)
}

// NewWatcher implements watchers.MethodConfig.
func (c *EtcdConfig) NewWatcher(d watchers.Deps) (watchers.Watcher, error) {
	return newWatcher(d, "etcd", c.Hosts, c.Path)
}

// RegistryPath implements watchers.RegistryPather.
func (c *EtcdConfig) RegistryPath() ([]string, string) { return c.Hosts, c.Path }

func checkPath(ch *watchers.Check, path string) {
	if !strings.HasPrefix(path, "/") {
		ch.Problem("path", "%q must be an absolute path", path)
	}
}

func newWatcher(d watchers.Deps, method string, hosts []string, path string) (watchers.Watcher, error) {
	if d.Registry == nil {
		return nil, fmt.Errorf("method %s: no registry clients here", method)
	}
	c, err := d.Registry(method, hosts)
	if err != nil {
		return nil, err
	}
	return &Watcher{Client: c, Path: path, Opts: d.Decode}, nil
}
