// Package plugin runs nerve checks and synapse watchers out of process,
// through hashicorp/go-plugin (net/rpc over a local socket): a plugin is an
// executable the operator configures, which crashes, hangs or leaks on its
// own, never in nerve or synapse.
//
// A plugin author implements Checker, Discoverer or both and calls Serve
// from main; see plugin/example for a complete plugin. The host side (nerve,
// synapse) uses Client, which starts the plugin when first needed, restarts
// it after it dies, and kills it when a call outlives its context.
package plugin

import (
	"errors"
	"net/rpc"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/syncstack/syncstack/registry"
)

// Handshake is checked by both sides: a binary that is not a syncstack
// plugin, or speaks another protocol version, is refused with a message.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "SYNCSTACK_PLUGIN",
	MagicCookieValue: "nerve-check-synapse-watcher",
}

// CheckRequest is one probe nerve asks a check plugin for.
type CheckRequest struct {
	Service string
	Host    string
	Port    int
	// Timeout is how long nerve waits; a plugin should answer sooner.
	Timeout time.Duration
	// Config is the check's `config` map from nerve's config.
	Config map[string]string
}

// Checker is implemented by check plugins: nil means healthy.
type Checker interface {
	Check(CheckRequest) error
}

// DiscoverRequest asks a watcher plugin for a service's instances.
type DiscoverRequest struct {
	Service string
	// Config is the discovery section's `config` map from synapse's config.
	Config map[string]string
}

// Discoverer is implemented by watcher plugins: the whole current set of
// the service's instances. An error keeps synapse's last set.
type Discoverer interface {
	Discover(DiscoverRequest) ([]registry.Instance, error)
}

// The plugin names both sides dispense.
const (
	checkName    = "check"
	discoverName = "discover"
)

// Serve runs impl (a Checker, a Discoverer, or both) as a plugin; it
// returns when nerve or synapse is done with it. Call it from main.
func Serve(impl any) {
	plugins := goplugin.PluginSet{}
	if c, ok := impl.(Checker); ok {
		plugins[checkName] = &checkPlugin{impl: c}
	}
	if d, ok := impl.(Discoverer); ok {
		plugins[discoverName] = &discoverPlugin{impl: d}
	}
	if len(plugins) == 0 {
		panic("plugin.Serve: impl is neither a Checker nor a Discoverer")
	}
	goplugin.Serve(&goplugin.ServeConfig{HandshakeConfig: Handshake, Plugins: plugins})
}

// pluginSet is what the host side knows how to dispense.
func pluginSet() goplugin.PluginSet {
	return goplugin.PluginSet{checkName: &checkPlugin{}, discoverName: &discoverPlugin{}}
}

// CheckReply is the wire form of a check's answer. The plugin's error
// travels as text: a failed net/rpc call means a broken plugin, which must
// stay distinguishable from an unhealthy instance.
type CheckReply struct{ Err string }

type checkPlugin struct{ impl Checker }

func (p *checkPlugin) Server(*goplugin.MuxBroker) (any, error) { return &checkServer{p.impl}, nil }
func (p *checkPlugin) Client(_ *goplugin.MuxBroker, c *rpc.Client) (any, error) {
	return &rpcCaller{c: c, method: "Plugin.Check"}, nil
}

type checkServer struct{ impl Checker }

// Check is the net/rpc method.
func (s *checkServer) Check(req CheckRequest, reply *CheckReply) error {
	if err := s.impl.Check(req); err != nil {
		reply.Err = err.Error()
		if reply.Err == "" {
			reply.Err = "unhealthy"
		}
	}
	return nil
}

// DiscoverReply is the wire form of a discovery answer.
type DiscoverReply struct {
	Instances []registry.Instance
	Err       string
}

type discoverPlugin struct{ impl Discoverer }

func (p *discoverPlugin) Server(*goplugin.MuxBroker) (any, error) {
	return &discoverServer{p.impl}, nil
}
func (p *discoverPlugin) Client(_ *goplugin.MuxBroker, c *rpc.Client) (any, error) {
	return &rpcCaller{c: c, method: "Plugin.Discover"}, nil
}

type discoverServer struct{ impl Discoverer }

// Discover is the net/rpc method.
func (s *discoverServer) Discover(req DiscoverRequest, reply *DiscoverReply) error {
	set, err := s.impl.Discover(req)
	reply.Instances = set
	if err != nil {
		reply.Err = err.Error()
		if reply.Err == "" {
			reply.Err = "discovery failed"
		}
	}
	return nil
}

// rpcCaller is the host side of one dispensed plugin.
type rpcCaller struct {
	c      *rpc.Client
	method string
}

var errNotServed = errors.New("the plugin does not serve this kind")
