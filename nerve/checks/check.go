// Package checks holds nerve's health checks: one file per type behind one
// small interface. A check probes one service instance once; nerve runs it
// every interval and counts rise/fall over the results.
package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/internal/confutil"
	"github.com/syncstack/syncstack/plugin"
)

// Check is one probe of one instance; nil means healthy. It must return
// by the time ctx ends.
type Check interface {
	Check(ctx context.Context) error
	// Name says what the check probes, for status output and metrics.
	Name() string
}

// Types lists the check types nerve implements.
var Types = []string{"tcp", "http", "https", "exec", "redis", "rabbitmq", "plugin"}

// DefaultTimeout is a check's timeout when none is set (capped by the
// service's check interval).
const DefaultTimeout = time.Second

// Config is one check of a service, as written in nerve's config.
type Config struct {
	Type string `yaml:"type"`
	// Name labels the check in status and metrics; default type@host:port.
	Name    string            `yaml:"name"`
	Timeout confutil.Duration `yaml:"timeout"`
	// Rise and Fall are Airbnb's per-check counts; nerve counts per service
	// and takes the largest.
	Rise int `yaml:"rise"`
	Fall int `yaml:"fall"`
	// Host and Port default to the service's.
	Host string `yaml:"host"`
	Port int    `yaml:"port"`

	// http, https
	URI           string            `yaml:"uri"`
	HostHeader    string            `yaml:"host_header"`
	Headers       map[string]string `yaml:"headers"`
	Expect        string            `yaml:"expect"`
	ExpectStatus  string            `yaml:"expect_status"` // "200-299" (default), "200", "2xx"
	TLSSkipVerify bool              `yaml:"tls_skip_verify"`

	// exec: run through /bin/sh -c; exit 0 is healthy.
	Command string `yaml:"command"`

	// redis: AUTH before PING when set. rabbitmq: the password (default
	// guest).
	Password string `yaml:"password"`

	// rabbitmq: the login (default guest), the vhost (default "/") and the
	// queue the check declares, publishes to and reads (default "nerve").
	Username string `yaml:"username"`
	Vhost    string `yaml:"vhost"`
	Queue    string `yaml:"queue"`

	// plugin: an out-of-process check (see package plugin).
	Plugin plugin.Config `yaml:",inline"`

	// Service is the name of the service the check belongs to (set by
	// nerve; plugins receive it).
	Service string `yaml:"-"`

	statusMin, statusMax int
}

// Finalize fills defaults from the service and validates. Errors name the key.
func (c *Config) Finalize(svcHost string, svcPort int, interval time.Duration) error {
	known := false
	for _, t := range Types {
		known = known || c.Type == t
	}
	if !known {
		return fmt.Errorf("type: %q is not supported (supported: %s)", c.Type, strings.Join(Types, ", "))
	}
	if c.Host == "" {
		c.Host = svcHost
	}
	if c.Port == 0 {
		c.Port = svcPort
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("port: %d is outside 1..65535", c.Port)
	}
	if c.Timeout == 0 {
		c.Timeout = confutil.Duration(min(DefaultTimeout, interval))
	}
	if interval > 0 && c.Timeout.D() > interval {
		return fmt.Errorf("timeout: %v is longer than the check interval %v", c.Timeout.D(), interval)
	}
	if c.Rise < 0 || c.Fall < 0 {
		return errors.New("rise and fall must not be negative")
	}
	if c.Name == "" {
		c.Name = c.Type + "@" + net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
		if c.Type == "exec" {
			c.Name = "exec"
		}
	}
	switch c.Type {
	case "http", "https":
		if c.URI == "" {
			c.URI = "/"
		}
		if !strings.HasPrefix(c.URI, "/") {
			return fmt.Errorf("uri: %q must start with /", c.URI)
		}
		lo, hi, err := parseStatus(c.ExpectStatus)
		if err != nil {
			return fmt.Errorf("expect_status: %w", err)
		}
		c.statusMin, c.statusMax = lo, hi
	case "exec":
		if strings.TrimSpace(c.Command) == "" {
			return errors.New("command: missing")
		}
	case "plugin":
		if err := c.Plugin.Validate(); err != nil {
			return err
		}
		if c.Name == "plugin@"+net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) {
			c.Name = "plugin:" + filepath.Base(c.Plugin.Path)
		}
	}
	if c.Type != "plugin" && (c.Plugin.Path != "" || len(c.Plugin.Args) > 0 || c.Plugin.SHA256 != "" || len(c.Plugin.Config) > 0) {
		return errors.New("plugin, plugin_args, plugin_sha256, config: only for type plugin")
	}
	if c.Type != "exec" && c.Type != "plugin" && (c.Host == "" || c.Port == 0) {
		return errors.New("host and port: missing (set them on the service or the check)")
	}
	return nil
}

func parseStatus(s string) (int, int, error) {
	switch {
	case s == "":
		return 200, 299, nil
	case len(s) == 3 && strings.HasSuffix(s, "xx") && s[0] >= '1' && s[0] <= '5':
		base := int(s[0]-'0') * 100
		return base, base + 99, nil
	}
	loS, hiS, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(loS))
	hi := lo
	var err2 error
	if isRange {
		hi, err2 = strconv.Atoi(strings.TrimSpace(hiS))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not a status, a range like 200-399, or a class like 2xx", s)
	}
	return lo, hi, nil
}

// New builds the check a finalized Config describes.
func New(c Config) (Check, error) {
	addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	switch c.Type {
	case "tcp":
		return &TCP{Addr: addr, name: c.Name}, nil
	case "http", "https":
		return newHTTP(c, addr), nil
	case "exec":
		return &Exec{Command: c.Command, name: c.Name}, nil
	case "redis":
		return &Redis{Addr: addr, Password: c.Password, name: c.Name}, nil
	case "rabbitmq":
		return &RabbitMQ{Addr: addr, Username: c.Username, Password: c.Password, Vhost: c.Vhost, Queue: c.Queue, name: c.Name}, nil
	case "plugin":
		return newPlugin(c)
	}
	return nil, fmt.Errorf("check type %q is not supported", c.Type)
}

// dialCheck connects to addr for one check round: the connection carries
// ctx's deadline and is closed when ctx ends, so a server that accepts and
// then says nothing cannot outlive the check's timeout. Close it when done.
func dialCheck(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	return &stopConn{Conn: c, stop: stop}, nil
}

// stopConn releases its context watch when closed.
type stopConn struct {
	net.Conn
	stop func() bool
}

func (c *stopConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
