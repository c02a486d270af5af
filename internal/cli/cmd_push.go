package cli

import (
	"context"

	"github.com/spf13/cobra"
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
		Long: `Copy each selected host's system closure to it with 'nix copy' (only the
paths it lacks), up to --parallel hosts at once. With --manifest, the
systems come from a build manifest and nothing is evaluated; otherwise the
flake is evaluated and built first.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPush(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerMaxJobs(cmd, g)
	opts.source.register(cmd.Flags(), false)
	return cmd
}

func runPush(ctx context.Context, g *globals, opts pushOptions, args []string) error {
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	return g.runHosts(ctx, "push", p, g.pushStep())
}
