package push

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
)

// FlakeLink is where a target keeps the flake it was deployed from
// (--copy-flake), for `nixos-rebuild --flake /var/lib/deployctl/flake`.
const FlakeLink = "/var/lib/deployctl/flake"

// Flake GC roots on the target: the flake's source, and its inputs' (a
// new copy's beside them until it is complete).
const (
	flakeRoot        = remote.GCRootDir + "/flake"
	inputsRoots      = remote.GCRootDir + "/flake-inputs"
	freshInputsRoots = inputsRoots + ".new"
)

// flakePrepareStep empties the directory for a new copy's inputs' roots.
var flakePrepareStep = &remote.Step{Name: "flake-prepare", Body: `rm -rf ` + freshInputsRoots + ` && mkdir -p ` + freshInputsRoots}

// flakeLinkStep points FlakeLink at $1, the flake's source, and lets the
// new inputs' roots replace the old.
var flakeLinkStep = &remote.Step{
	Name: "flake-link",
	Body: remote.StorePathFn + `store_path "$1"
l=` + FlakeLink + `; mkdir -p "${l%/*}" && ln -sfn "$1" "$l.new" && mv -fT "$l.new" "$l" && rm -rf ` + inputsRoots + ` && mv -fT ` + freshInputsRoots + ` ` + inputsRoots,
}

// Steps are the push's steps, for deployctl-remote.
func Steps() []*remote.Step {
	return []*remote.Step{rootStep, flakePrepareStep, flakeLinkStep, daemonStep}
}

// Flake copies a flake's source and its inputs' (nix flake archive) to
// the target, each kept by a GC root, and points FlakeLink at the source,
// so the host can be rebuilt from it without the deploying machine.
// An earlier copy's inputs lose their roots once the new copy is
// complete.
func Flake(ctx context.Context, conn Target, src Source, flake nix.FlakeSource, opts Options) error {
	// The new inputs' roots go beside the old ones, which they replace
	// only once the new copy is complete.
	fresh := freshInputsRoots
	if err := conn.Run(ctx, flakePrepareStep.Cmd()); err != nil {
		return fmt.Errorf("prepare the flake inputs' roots: %w", err)
	}
	for _, in := range flake.Inputs {
		o := opts
		o.Root = fresh + "/" + filepath.Base(in)
		if _, err := Native(ctx, conn, src, in, o); err != nil {
			return fmt.Errorf("flake input %s: %w", in, err)
		}
	}
	o := opts
	o.Root = flakeRoot
	if _, err := Native(ctx, conn, src, flake.Path, o); err != nil {
		return fmt.Errorf("flake source %s: %w", flake.Path, err)
	}
	if err := conn.Run(ctx, flakeLinkStep.Cmd(flake.Path)); err != nil {
		return fmt.Errorf("link %s: %w", FlakeLink, err)
	}
	return nil
}
