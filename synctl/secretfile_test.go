package synctl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncstack/syncstack/internal/testserver"
)

// A password or key file others can read is refused before synctl uses
// it, from a flag or from --config, with an error naming the file.
func TestExposedCredentialFileRefused(t *testing.T) {
	pki := testserver.NewPKI(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "client.key")
	data, err := os.ReadFile(pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "password")
	for p, d := range map[string][]byte{key: data, pw: []byte("secret\n")} {
		if err := os.WriteFile(p, d, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "synctl.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("etcd: [http://127.0.0.1:1]\netcd_security: {ca_file: %s, cert_file: %s, key_file: %s}\n", pki.CA, pki.ClientCert, key)), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		file string
	}{
		{"--etcd-key", []string{"history", "--etcd", "http://127.0.0.1:1", "--etcd-cacert", pki.CA, "--etcd-cert", pki.ClientCert, "--etcd-key", key}, key},
		{"--etcd-password-file", []string{"history", "--etcd", "http://127.0.0.1:1", "--etcd-user", "op", "--etcd-password-file", pw}, pw},
		{"--config key_file", []string{"history", "--config", cfg}, key},
	} {
		var out, errb bytes.Buffer
		env := Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, Now: time.Now, By: "t"}
		code := Main(context.Background(), tc.args, env)
		if code != ExitUsage || !strings.Contains(errb.String(), tc.file) || !strings.Contains(errb.String(), "mode 0644") {
			t.Errorf("%s: exit %d: %s", tc.name, code, errb.String())
		}
	}
}
