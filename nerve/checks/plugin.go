package checks

import (
	"context"

	"github.com/syncstack/syncstack/plugin"
)

// Plugin asks an out-of-process plugin (package plugin) whether the
// instance is healthy. The plugin process starts at the first check, is
// started again if it dies, and is killed when it outlives the check's
// timeout. One process per check; Close stops it.
type Plugin struct {
	client *plugin.Client
	req    plugin.CheckRequest
	name   string
}

func newPlugin(c Config) (*Plugin, error) {
	client, err := plugin.NewClient(c.Plugin, nil)
	if err != nil {
		return nil, err
	}
	return &Plugin{client: client, name: c.Name, req: plugin.CheckRequest{
		Service: c.Service, Host: c.Host, Port: c.Port, Timeout: c.Timeout.D(), Config: c.Plugin.Config,
	}}, nil
}

// Name implements Check.
func (p *Plugin) Name() string { return p.name }

// Check implements Check.
func (p *Plugin) Check(ctx context.Context) error { return p.client.Check(ctx, p.req) }

// Close stops the plugin process.
func (p *Plugin) Close() error { return p.client.Close() }
