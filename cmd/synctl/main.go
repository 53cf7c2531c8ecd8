// Command synctl is the operator's tool: fleet-wide drain, maint, weight and
// add-to-lb through overrides that every synapse applies. Run
// `synctl --help` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/syncstack/syncstack/synctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := synctl.Main(ctx, os.Args[1:], synctl.DefaultEnv())
	stop()
	os.Exit(code)
}
