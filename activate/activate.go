// Package activate makes a pushed system the running one on its target.
package activate

import (
	"context"
	"fmt"
	"io"

	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/push"
)

// SystemProfile is the NixOS system profile.
const SystemProfile = "/nix/var/nix/profiles/system"

// Actions are the switch-to-configuration actions.
var Actions = []string{"switch", "boot", "test", "dry-activate"}

// Runner runs a command on the target; *remote.Conn is one.
type Runner interface {
	Run(ctx context.Context, cmd remote.Cmd) error
}

// Options are where the switch's own output goes (nil: kept only for
// errors), and where warnings go.
type Options struct {
	Stdout, Stderr io.Writer
	Warn           func(msg string)
}

// Activate makes toplevel the target's system for action: it realises the
// toplevel in the target's store (a no-op when pushed; from the target's
// own substituters otherwise), for switch and boot sets the system profile,
// then runs the toplevel's own switch-to-configuration.
func Activate(ctx context.Context, r Runner, toplevel, action string, opts Options) error {
	if !validAction(action) {
		return fmt.Errorf("unknown action %q (want switch, boot, test or dry-activate)", action)
	}
	if err := r.Run(ctx, remote.Cmd{Argv: []string{"nix-store", "--realise", toplevel}, Root: true, Stdout: opts.Stdout, Stderr: opts.Stderr}); err != nil {
		return fmt.Errorf("realise %s: %w", toplevel, err)
	}
	if action == "switch" || action == "boot" {
		err := r.Run(ctx, remote.Cmd{Argv: []string{"nix-env", "-p", SystemProfile, "--set", toplevel}, Root: true, Stdout: opts.Stdout, Stderr: opts.Stderr})
		if err != nil {
			return fmt.Errorf("set system profile: %w", err)
		}
	}
	err := r.Run(ctx, remote.Cmd{Argv: []string{toplevel + "/bin/switch-to-configuration", action}, Root: true, Stdout: opts.Stdout, Stderr: opts.Stderr})
	if err != nil {
		return fmt.Errorf("switch-to-configuration %s: %w", action, err)
	}
	if action == "switch" || action == "boot" {
		// The profile keeps the system now: the push's root, when it is
		// this system's, is no longer needed. Failing to drop it leaves
		// a root that the next push replaces: worth a warning, no more.
		drop := `[ "$(readlink "$1")" != "$2" ] || rm -f "$1"`
		err = r.Run(ctx, remote.Cmd{Argv: []string{"sh", "-c", drop, "sh", push.Root, toplevel}, Root: true, Stdout: opts.Stdout, Stderr: opts.Stderr})
		if err != nil && opts.Warn != nil {
			opts.Warn(fmt.Sprintf("could not drop the push's GC root %s: %v", push.Root, err))
		}
	}
	return nil
}

func validAction(a string) bool {
	for _, x := range Actions {
		if a == x {
			return true
		}
	}
	return false
}
