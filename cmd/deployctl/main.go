// Command deployctl builds, pushes and activates NixOS systems across a fleet.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/deployctl/deployctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.Invocation{Args: os.Args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Environ()})
	stop()
	os.Exit(code)
}
