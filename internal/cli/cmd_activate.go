package cli

import (
	"context"

	"github.com/spf13/cobra"
)

type activateOptions struct {
	selection
	source
	action string
}

func newActivateCommand(g *globals) *cobra.Command {
	var opts activateOptions
	cmd := &cobra.Command{
		Use:   "activate [SELECTORS…|--all]",
		Short: "Activate the selected hosts' pushed systems",
		Long: `On each selected host: realise its system in the host's own store (it was
pushed, or the host's substituters have it), set the system profile (switch
and boot) and run the system's switch-to-configuration ACTION; after a
switch or boot, the push's GC root is no longer needed and goes. With
--manifest, the systems come from a build manifest and nothing is
evaluated; otherwise the flake is evaluated and built first.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runActivate(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerBuildFlags(cmd, g)
	opts.source.register(cmd.Flags(), false)
	registerAction(cmd, &opts.action)
	return cmd
}

func runActivate(ctx context.Context, g *globals, opts activateOptions, args []string) error {
	if err := checkAction(opts.action); err != nil {
		return err
	}
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	return g.runHosts(ctx, "activate", p, g.activateStep(opts.action))
}
