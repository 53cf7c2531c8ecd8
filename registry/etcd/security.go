package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/syncstack/syncstack/internal/secretfile"
)

// Security is how a client reaches a secured etcd cluster, as configs write
// it (nerve's and synapse's `etcd_security`, synctl's flags): TLS with the
// cluster's CA, a client certificate for clusters that require one, and
// etcd's own user/password authentication. The zero value is plain text.
type Security struct {
	// CAFile verifies the servers' certificates (PEM); empty: the system
	// roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and key (PEM), for
	// clusters run with --client-cert-auth.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the servers' certificates.
	ServerName string `yaml:"server_name"`
	// Username and PasswordFile log in with etcd's authentication. The
	// password stays in its own file (mode 0600), out of configs and
	// status output.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// TLS reports whether TLS is configured.
func (s Security) TLS() bool {
	return s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != ""
}

// Apply loads the files and sets cfg's TLS and credentials. Errors name the
// key and the file.
func (s Security) Apply(cfg *Config) error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("cert_file and key_file: give both or neither")
	}
	if s.TLS() {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return fmt.Errorf("ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("ca_file: %s holds no PEM certificate", s.CAFile)
			}
			tc.RootCAs = pool
		}
		if s.CertFile != "" {
			if err := secretfile.Check(s.KeyFile); err != nil {
				return fmt.Errorf("key_file: %w", err)
			}
			cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				return fmt.Errorf("cert_file, key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	if (s.Username == "") != (s.PasswordFile == "") {
		return errors.New("username and password_file: give both or neither")
	}
	if s.PasswordFile != "" {
		b, err := secretfile.Read(s.PasswordFile)
		if err != nil {
			return fmt.Errorf("password_file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return fmt.Errorf("password_file: %s is empty", s.PasswordFile)
		}
		cfg.Username, cfg.Password = s.Username, pw
	}
	return nil
}

// tlsProblem dials endpoint with tc and reports what the TLS handshake says
// (an unknown CA, a certificate the server requires, a name mismatch), or
// nil. gRPC hides these behind "context deadline exceeded".
func tlsProblem(endpoint string, tc *tls.Config, timeout time.Duration) error {
	host := endpoint
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		host = u.Host
	}
	cfg := tc.Clone()
	if cfg.ServerName == "" {
		if h, _, err := net.SplitHostPort(host); err == nil {
			cfg.ServerName = h
		}
	}
	// etcd serves gRPC over HTTP/2.
	cfg.NextProtos = []string{"h2"}
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", host, cfg)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil // not reachable: not a TLS problem
		}
		return fmt.Errorf("TLS with %s: %w", host, err)
	}
	defer conn.Close()
	// A server that wants a client certificate says so after the
	// handshake (TLS 1.3): read briefly for its alert.
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		if strings.Contains(err.Error(), "tls:") {
			return fmt.Errorf("TLS with %s: %w", host, err)
		}
	}
	return nil
}

// HostEndpoint is the endpoint for Airbnb's separate etcd host and port
// keys (port 0: 2379). It has no scheme: TLS or not follows the client's
// Security.
func HostEndpoint(host string, port int) string {
	if port == 0 {
		port = 2379
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
