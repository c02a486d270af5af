// Command fleet starts a local test fleet, writes a fixture flake for it,
// runs a command with the fleet's coordinates in its environment, and stops
// the fleet. `make demo` uses it.
//
//	fleet [-hosts alpha,beta,gamma] [-dir DIR] -- COMMAND [ARG…]
//
// The command sees FLEET_DIR, FLEET_SSH_CONFIG and FLEET_FLAKE.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/deployctl/deployctl/integration/fixture"
	"github.com/deployctl/deployctl/integration/fleet"
)

func main() {
	os.Exit(run())
}

func run() int {
	hosts := flag.String("hosts", "alpha,beta,gamma", "comma-separated host names")
	dir := flag.String("dir", "", "working directory (default: a new temporary one, removed at the end)")
	systemd := flag.String("systemd", "", "make the hosts Debian containers of this `RELEASE` (bookworm, trixie) booting systemd")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: fleet [-hosts a,b,c] [-dir DIR] -- COMMAND [ARG…]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dir == "" {
		d, err := os.MkdirTemp("", "deployctl-fleet-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "fleet:", err)
			return 1
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	names := strings.Split(*hosts, ",")
	fmt.Fprintf(os.Stderr, "fleet: starting %d hosts (%s) in %s\n", len(names), *hosts, *dir)
	f, err := fleet.Start(ctx, fleet.Options{Dir: *dir, Hosts: names, Systemd: *systemd})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		return 1
	}
	defer func() {
		f.Stop()
		fmt.Fprintln(os.Stderr, "fleet: stopped")
	}()
	var specs []fixture.Host
	tags := []string{"web", "web", "db"}
	for i, h := range f.Hosts {
		kind := "own /nix in " + filepath.Join(h.Root, "nix")
		if *systemd != "" {
			kind = "Debian " + *systemd + " booting systemd, its root an overlay in " + h.Root
		}
		fmt.Fprintf(os.Stderr, "fleet: %s on %s (%s)\n", h.Name, h.Addr, kind)
		specs = append(specs, fixture.Host{Name: h.Name, Deployment: map[string]any{"tags": []string{tags[i%len(tags)]}}})
	}
	flakeDir := filepath.Join(*dir, "flake")
	if err := fixture.Write(flakeDir, specs); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		return 1
	}
	cmd := exec.CommandContext(ctx, flag.Arg(0), flag.Args()[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "FLEET_DIR="+*dir, "FLEET_SSH_CONFIG="+f.SSHConfig, "FLEET_FLAKE="+flakeDir)
	// The command goes when the fleet does, even if this process is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "fleet:", err)
		return 1
	}
	return 0
}
