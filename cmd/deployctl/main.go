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
	// The first Ctrl-C (or SIGTERM) interrupts: no new host starts, and
	// activations under way finish. The second detaches from them.
	interrupted, interrupt := context.WithCancel(context.Background())
	detached, detach := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		interrupt()
		<-signals
		detach()
		signal.Stop(signals) // a third kills
	}()
	os.Exit(cli.Main(interrupted, cli.Invocation{Args: os.Args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Env: os.Environ(), Detach: detached}))
}
