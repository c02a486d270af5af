package cli

import (
	"context"

	"github.com/spf13/cobra"
)

type activateOptions struct {
	selection
	source
	activation activateFlags
}

func newActivateCommand(g *globals) *cobra.Command {
	var opts activateOptions
	cmd := &cobra.Command{
		Use:   "activate [SELECTORS…|--all]",
		Short: "Activate the selected hosts' pushed systems",
		Long: `On each selected host: take the host's lock (/run/deployctl/lock: a second
deploy to the host is refused, naming the first), record the running system,
realise the new one in the host's own store (it was pushed, or the host's
substituters have it), arm the dead-man's switch (switch and test), then, in
a job detached from the SSH session, set the system profile (switch and
boot) and run the system's switch-to-configuration ACTION. A lost connection
does not stop the job: deployctl reconnects and reads its true result.

After the switch, deployctl checks in over a new SSH connection within
deployment.confirmTimeout seconds (default 30), or the host's watchdog rolls
it back by itself (a system that breaks SSH heals itself); then it runs the
host's deployment.healthChecks (morph's cmd and http checks, and tcp) until
they pass or --probe-timeout ends.

When the switch fails (exit status 1, 2, or 4 unless --allow-failed-units;
100 only says a reboot is required) or a health check never passes, the host
goes back to exactly the system it ran before, unless --no-rollback. Each
activation appends a line to /var/lib/deployctl/journal.jsonl on the host.
After a switch or boot, the push's GC root is no longer needed and goes.

With --manifest, the systems come from a build manifest and nothing is
evaluated; otherwise the flake is evaluated and built first.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runActivate(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	registerBuildFlags(cmd, g)
	opts.source.register(cmd.Flags(), false)
	opts.activation.register(cmd)
	return cmd
}

func runActivate(ctx context.Context, g *globals, opts activateOptions, args []string) error {
	if err := opts.activation.check(); err != nil {
		return err
	}
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	specs, err := activationSpecs(p.hosts)
	if err != nil {
		return err
	}
	return g.runHosts(ctx, "activate", p, &opts.activation, g.activateStep(opts.activation, specs))
}
