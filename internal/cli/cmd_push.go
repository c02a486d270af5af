package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/push"
)

type pushOptions struct {
	selection
	source
}

func newPushCommand(g *globals) *cobra.Command {
	var opts pushOptions
	cmd := &cobra.Command{
		Use:   "push [SELECTORS…|--all]",
		Short: "Copy the selected hosts' systems to them, without activating",
		Long: `Copy each selected host's system closure to it, only the paths it lacks,
up to --parallel hosts at once: over the host's SSH connection, deployctl
speaks Nix's 'nix-store --serve' protocol itself, sending path after path
without waiting for each. A system built on a builder is streamed from the
builder to the host, without passing through this machine's store. The
pushed system is a GC root on the host (/nix/var/nix/gcroots/deployctl/pushed)
until a switch or boot puts it in the system profile.
--copy-backend nix or nix-ssh uses 'nix copy' instead (local systems only).

With --manifest, the systems come from a build manifest and nothing is
evaluated; otherwise the flake is evaluated and built first.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPush(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerBuildFlags(cmd, g)
	registerPushFlags(cmd, g)
	opts.source.register(cmd.Flags(), false)
	return cmd
}

// registerPushFlags adds the flags of a command that pushes.
func registerPushFlags(cmd *cobra.Command, g *globals) {
	cmd.Flags().StringVar(&g.copyBackend, "copy-backend", "native", "copy closures with `BACKEND`: native (deployctl's own nix-store --serve client), nix ('nix copy --to ssh-ng://', nix-daemon --stdio on the host) or nix-ssh ('nix copy --to ssh://', nix-store --serve on the host)")
	cmd.Flags().BoolVarP(&g.substitute, "substitute-on-destination", "s", false, "let each host first fetch what it can from its own binary caches; only the rest is sent")
	cmd.Flags().StringVar(&g.signKeyFile, "sign-key", "", "sign the paths sent with the Nix secret key in `FILE`, for targets that accept only signed paths from a non-root user")
	cmd.Flags().BoolVar(&g.copyFlake, "copy-flake", false, "also copy the flake's source and its inputs to each host ("+push.FlakeLink+", kept from garbage collection), so the host can be rebuilt from it on its own")
}

// nixCopy reports whether pushes run nix copy.
func (g *globals) nixCopy() bool { return g.copyBackend == "nix" || g.copyBackend == "nix-ssh" }

// checkPushFlags checks the push flags and loads the signing key.
func checkPushFlags(g *globals) error {
	if g.copyBackend != "native" && !g.nixCopy() {
		return usageErrorf("--copy-backend %q: want native, nix or nix-ssh", g.copyBackend)
	}
	if g.copyFlake && g.nixCopy() {
		return usageErrorf("--copy-flake works with the native backend only")
	}
	if g.signKeyFile == "" {
		return nil
	}
	if g.nixCopy() {
		return usageErrorf("--sign-key works with the native backend only (nix copy does not sign)")
	}
	s, err := push.LoadSigner(g.signKeyFile)
	if err != nil {
		return usageErrorf("--sign-key: %w", err)
	}
	g.signer = s
	return nil
}

func runPush(ctx context.Context, g *globals, opts pushOptions, args []string) error {
	if err := checkPushFlags(g); err != nil {
		return err
	}
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	steps, err := g.pushSteps(ctx, opts.source)
	if err != nil {
		return err
	}
	return g.runHosts(ctx, "push", p, nil, steps...)
}

// pushSteps are the push step and, with --copy-flake, the flake's copy,
// whose source (and inputs) it puts in the local store first.
func (g *globals) pushSteps(ctx context.Context, src source) ([]hostStep, error) {
	steps := []hostStep{g.pushStep()}
	if !g.copyFlake {
		return steps, nil
	}
	if src.manifest != "" || src.closure != "" {
		return nil, usageErrorf("--copy-flake copies the flake deployed from: not with --manifest or --closure")
	}
	ref, err := nix.FlakeRef(g.flake)
	if err != nil {
		return nil, usageError{err}
	}
	flake, err := g.nix().FlakeArchive(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("--copy-flake: %w", err)
	}
	return append(steps, hostStep{name: "copy flake", root: true, run: func(ctx context.Context, conn *remote.Conn, h *inventory.Host, _ built) error {
		src := push.LocalStore{Nix: g.nix()}
		if err := push.Flake(ctx, conn, src, flake, push.Options{Substitute: g.substitute, Sign: g.signer}); err != nil {
			return err
		}
		g.log.Info("copied the flake to "+push.FlakeLink, "host", h.Name, "source", flake.Path)
		return nil
	}}), nil
}
