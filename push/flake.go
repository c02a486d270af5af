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

// Flake GC roots on the target: the flake's source, and its inputs'.
const (
	flakeRoot   = "/nix/var/nix/gcroots/deployctl/flake"
	inputsRoots = "/nix/var/nix/gcroots/deployctl/flake-inputs"
)

// Flake copies a flake's source and its inputs' (nix flake archive) to
// the target, each kept by a GC root, and points FlakeLink at the source,
// so the host can be rebuilt from it without the deploying machine.
// An earlier copy's inputs lose their roots once the new copy is
// complete.
func Flake(ctx context.Context, conn Target, src Source, flake nix.FlakeSource, opts Options) error {
	// The new inputs' roots go beside the old ones, which they replace
	// only once the new copy is complete.
	fresh := inputsRoots + ".new"
	clear := `rm -rf "$1" && mkdir -p "$1"`
	if err := conn.Run(ctx, remote.Cmd{Argv: []string{"sh", "-c", clear, "sh", fresh}, Root: true}); err != nil {
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
	link := `mkdir -p "${1%/*}" && ln -sfn "$2" "$1.new" && mv -fT "$1.new" "$1" && rm -rf "$3" && mv -fT "$4" "$3"`
	if err := conn.Run(ctx, remote.Cmd{Argv: []string{"sh", "-c", link, "sh", FlakeLink, flake.Path, inputsRoots, fresh}, Root: true}); err != nil {
		return fmt.Errorf("link %s: %w", FlakeLink, err)
	}
	return nil
}
