package cli

import (
	"context"
	"slices"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
)

type deployOptions struct {
	selection
	source
	activation activateFlags
}

func newDeployCommand(g *globals) *cobra.Command {
	var opts deployOptions
	cmd := &cobra.Command{
		Use:   "deploy [SELECTORS…|--all]",
		Short: "Build, push and activate the selected hosts",
		Long: `Build the selected hosts' systems (one evaluation, one build), then for each
host, up to --parallel at once: connect over SSH, copy the closure (only
the paths the host lacks; see 'deployctl push --help'), then activate it
under the host's lock: set the system profile and run the new system's
switch-to-configuration in a job detached from the SSH session, and go back
to the system that ran before when that fails (see 'deployctl activate
--help'). Systems are built here unless --build-host, --build-on-target or the
hosts' deployment.buildHost / buildOnTarget say otherwise. A failing host
does not stop the others; a summary ends the run.

With --manifest, the systems come from a build manifest and nothing is
evaluated. With --closure PATH HOST, one prebuilt system goes to one host
(an ssh_config alias or address) without a flake.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDeploy(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerBuildFlags(cmd, g)
	registerPushFlags(cmd, g)
	opts.source.register(cmd.Flags(), true)
	opts.activation.register(cmd)
	return cmd
}

func runDeploy(ctx context.Context, g *globals, opts deployOptions, args []string) error {
	if err := checkAction(opts.activation.action); err != nil {
		return err
	}
	if err := checkPushFlags(g); err != nil {
		return err
	}
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	return g.runHosts(ctx, "deploy", p, g.pushStep(), g.activateStep(opts.activation))
}

// activateFlags are the flags of the commands that activate.
type activateFlags struct {
	action           string
	allowFailedUnits bool
	noRollback       bool
}

func (f *activateFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.action, "action", "switch", "switch-to-configuration `ACTION`: switch, boot, test or dry-activate")
	cmd.Flags().BoolVar(&f.allowFailedUnits, "allow-failed-units", false, "accept a switch whose only failure is units that failed to start (switch-to-configuration's status 4)")
	cmd.Flags().BoolVar(&f.noRollback, "no-rollback", false, "leave a host whose switch failed as it is, instead of switching it back to the system it ran before")
}

func checkAction(a string) error {
	if !slices.Contains(activate.Actions, a) {
		return usageErrorf("--action %q: want switch, boot, test or dry-activate", a)
	}
	return nil
}
