package zookeeper

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/syncstack/syncstack/internal/backoff"
	"github.com/syncstack/syncstack/internal/secretfile"
)

// AuthFileEnv names the environment variable holding the path of a
// ZooKeeper credential file, used when Config.Auth and Config.AuthFile are
// both unset. The variable holds a path, never the secret itself.
const AuthFileEnv = "SYNCSTACK_ZK_AUTH_FILE"

// Auth is a ZooKeeper digest identity. Every process of one role shares
// one: all nerves are "nerve", all synapses "synapse", operators (synctl)
// "operator"; the ACLs of the nodes each creates name that identity.
type Auth struct {
	User     string
	Password string
}

// String never shows the password: an Auth may end up in a log line.
func (a Auth) String() string { return "digest:" + a.User }

// GoString keeps the password out of %#v.
func (a Auth) GoString() string { return a.String() }

// LogValue keeps the password out of slog output.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// DigestID is the identity ZooKeeper stores in an ACL for a, as in
// setAcl /path digest:<DigestID>:crwda.
func (a *Auth) DigestID() string {
	return zk.DigestACL(zk.PermRead, a.User, a.Password)[0].ID
}

// ParseAuth parses "user:password" (one line; surrounding blanks and a
// trailing newline are ignored). Errors never quote the input.
func ParseAuth(b []byte) (*Auth, error) {
	s := strings.TrimSpace(string(b))
	if strings.ContainsAny(s, "\r\n") {
		return nil, errors.New("zookeeper credentials: more than one line (want user:password)")
	}
	user, pw, ok := strings.Cut(s, ":")
	if !ok || user == "" || pw == "" {
		return nil, errors.New("zookeeper credentials: not user:password")
	}
	return &Auth{User: user, Password: pw}, nil
}

// LoadAuth reads a credential file (user:password), refusing one others
// can read (internal/secretfile).
func LoadAuth(path string) (*Auth, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("zookeeper credentials: %w", err)
	}
	a, err := ParseAuth(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// resolveAuth fills cfg.Auth from cfg.AuthFile or the environment.
func (cfg *Config) resolveAuth() error {
	if cfg.Auth != nil {
		if cfg.Auth.User == "" || cfg.Auth.Password == "" {
			return errors.New("zookeeper: auth: user and password are required")
		}
		return nil
	}
	f := cfg.AuthFile
	if f == "" {
		f = os.Getenv(AuthFileEnv)
	}
	if f == "" {
		return nil
	}
	a, err := LoadAuth(f)
	if err != nil {
		return fmt.Errorf("zookeeper: %w", err)
	}
	cfg.Auth = a
	return nil
}

// acl is the ACL of every node this client creates. With credentials: all
// permissions for this client's identity ("auth" is expanded by the server
// to the session's authenticated ids) and read for everyone, so readers
// (Airbnb-style ones included) need no credentials. Without: open, as
// before credentials existed.
func (c *Client) acl() []zk.ACL {
	if c.cfg.Auth == nil {
		return zk.WorldACL(zk.PermAll)
	}
	return append(zk.AuthACL(zk.PermAll), zk.WorldACL(zk.PermRead)...)
}

// AuthError is a write the server refused for lack of permission. It
// names the identity, never its secret.
type AuthError struct {
	Path     string
	Identity string // "digest:<user>" or "" for an unauthenticated client
	Err      error
}

func (e *AuthError) Error() string {
	if e.Identity == "" {
		return fmt.Sprintf("zookeeper: write to %s refused for an unauthenticated client (set zk_auth_file or %s): %v", e.Path, AuthFileEnv, e.Err)
	}
	return fmt.Sprintf("zookeeper: write to %s refused for identity %s (wrong password, or the node belongs to another identity; see synctl setup-zk): %v", e.Path, e.Identity, e.Err)
}

func (e *AuthError) Unwrap() error { return e.Err }

// denied wraps a refused write of p in an AuthError.
func (c *Client) denied(p string, err error) error {
	if err == nil || !errors.Is(err, zk.ErrNoAuth) {
		return err
	}
	var ae *AuthError
	if errors.As(err, &ae) {
		return err
	}
	id := ""
	if c.cfg.Auth != nil {
		id = c.cfg.Auth.String()
	}
	return &AuthError{Path: p, Identity: id, Err: err}
}

// authenticate adds the digest credentials to the connection, retrying
// until it succeeds or the client closes. go-zookeeper remembers them and
// re-sends them on every reconnect and new session before any queued
// request (Conn.resendZkAuth runs before its send loop). Until the first
// AddAuth succeeds, session() reports no session, so no write goes out
// unauthenticated.
func (c *Client) authenticate() {
	bo := backoff.New(100*time.Millisecond, 5*time.Second)
	auth := []byte(c.cfg.Auth.User + ":" + c.cfg.Auth.Password)
	defer clear(auth)
	for {
		// AddAuth waits for a connection; call lets Close end the wait
		// (the request itself ends when Close closes the connection).
		err := call(c.ctx, func() error { return c.conn.AddAuth("digest", bytes.Clone(auth)) })
		if err == nil {
			c.mu.Lock()
			c.authed = true
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			c.log.Info("authenticated", "identity", c.cfg.Auth.String())
			return
		}
		c.log.Debug("adding credentials failed; retrying", "identity", c.cfg.Auth.String(), "err", err)
		if bo.Wait(c.ctx) != nil {
			return
		}
	}
}
