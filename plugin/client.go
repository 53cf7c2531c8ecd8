package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/syncstack/syncstack/registry"
)

// Config names a plugin executable, as nerve's and synapse's configs give it.
type Config struct {
	// Path of the executable (absolute, or found in $PATH).
	Path string `yaml:"plugin"`
	// Args are passed to it.
	Args []string `yaml:"plugin_args"`
	// SHA256, when set, is the hex SHA-256 the executable must have: a
	// replaced binary is refused instead of run.
	SHA256 string `yaml:"plugin_sha256"`
	// Config is handed to the plugin with every request.
	Config map[string]string `yaml:"config"`
}

// Validate checks the config; errors name the key.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.Path) == "" {
		return errors.New("plugin: missing (the plugin executable)")
	}
	if c.SHA256 != "" {
		if b, err := hex.DecodeString(c.SHA256); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("plugin_sha256: %q is not a hex SHA-256", c.SHA256)
		}
	}
	return nil
}

// Client is the host side of one plugin process. It starts the process at
// the first call, starts it again after it exited, and kills it when a call
// outlives its context (a hung plugin is never reused). Safe for
// concurrent use; calls are serialized.
type Client struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	client *goplugin.Client
	rpc    goplugin.ClientProtocol
	closed bool
}

// NewClient validates cfg and returns a client; no process starts yet.
func NewClient(cfg Config, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Client{cfg: cfg, log: log.With("plugin", cfg.Path)}, nil
}

// Close kills the plugin process, if any; later calls fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.killLocked()
	return nil
}

func (c *Client) killLocked() {
	if c.client != nil {
		c.client.Kill()
	}
	c.client, c.rpc = nil, nil
}

// Check asks the plugin to probe once.
func (c *Client) Check(ctx context.Context, req CheckRequest) error {
	var reply CheckReply
	if err := c.call(ctx, checkName, req, &reply); err != nil {
		return err
	}
	if reply.Err != "" {
		return errors.New(reply.Err)
	}
	return nil
}

// Discover asks the plugin for the service's instances.
func (c *Client) Discover(ctx context.Context, req DiscoverRequest) ([]registry.Instance, error) {
	var reply DiscoverReply
	if err := c.call(ctx, discoverName, req, &reply); err != nil {
		return nil, err
	}
	if reply.Err != "" {
		return nil, errors.New(reply.Err)
	}
	return reply.Instances, nil
}

func (c *Client) call(ctx context.Context, kind string, req, reply any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("plugin client closed")
	}
	if c.client != nil && c.client.Exited() {
		c.log.Warn("plugin exited; starting it again")
		c.killLocked()
	}
	if c.client == nil {
		if err := c.startLocked(); err != nil {
			return err
		}
	}
	raw, err := c.rpc.Dispense(kind)
	if err != nil {
		c.killLocked()
		return fmt.Errorf("plugin %s: %s: %w", c.cfg.Path, kind, err)
	}
	caller, ok := raw.(*rpcCaller)
	if !ok {
		return fmt.Errorf("plugin %s: %w", c.cfg.Path, errNotServed)
	}
	call := caller.c.Go(caller.method, req, reply, nil)
	select {
	case <-call.Done:
		if call.Error != nil {
			// The plugin broke (crashed mid-call, or does not serve kind):
			// start afresh next time.
			c.killLocked()
			return fmt.Errorf("plugin %s: %w", c.cfg.Path, call.Error)
		}
		return nil
	case <-ctx.Done():
		c.log.Warn("plugin did not answer in time; killing it", "err", ctx.Err())
		c.killLocked()
		return fmt.Errorf("plugin %s: timed out: %w", c.cfg.Path, ctx.Err())
	}
}

func (c *Client) startLocked() error {
	cmd := exec.Command(c.cfg.Path, c.cfg.Args...)
	var secure *goplugin.SecureConfig
	if c.cfg.SHA256 != "" {
		sum, _ := hex.DecodeString(c.cfg.SHA256)
		secure = &goplugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          pluginSet(),
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolNetRPC},
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: slogWriter{c.log}}),
		SyncStderr:       slogWriter{c.log},
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return fmt.Errorf("plugin %s: start: %w", c.cfg.Path, err)
	}
	c.client, c.rpc = client, rpcClient
	return nil
}

// slogWriter passes a plugin's stderr and go-plugin's own log lines to the
// host's log.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if l != "" {
			w.log.Warn("plugin log", "line", l)
		}
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
