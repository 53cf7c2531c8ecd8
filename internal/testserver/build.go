package testserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ShipTags are the build tags `make build` and `make dist` build the
// daemons with: grpcnotrace leaves out gRPC's request tracing
// (golang.org/x/net/trace and the templates it links, ~0.5 MB of the
// binary, and the debug handlers it registers on http.DefaultServeMux,
// which nothing here serves). Keep it in step with the Makefile's TAGS.
const ShipTags = "grpcnotrace"

// BuildAsShipped builds the main package at pkg (a path, as go build takes
// it) into a temporary directory the way `make dist` does — static
// (CGO_ENABLED=0: with cgo, libc alone adds ~1.3 MB of RSS) and with
// ShipTags — and returns the binary's path: what ships is what is
// measured.
func BuildAsShipped(tb testing.TB, pkg string) string {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), filepath.Base(pkg))
	build := exec.Command("go", "build", "-tags", ShipTags, "-o", out, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build %s: %v\n%s", pkg, err, msg)
	}
	return out
}
