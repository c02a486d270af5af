package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/push"
)

type deployOptions struct {
	selection
	action string
}

func newDeployCommand(g *globals) *cobra.Command {
	var opts deployOptions
	cmd := &cobra.Command{
		Use:   "deploy [SELECTORS…|--all]",
		Short: "Build, push and activate the selected hosts",
		Long: `Build the selected hosts' systems (one evaluation, one build), then for each
host, up to --parallel at once: connect over SSH, copy the closure with
'nix copy' (only the paths the host lacks), set the system profile and run
the new system's switch-to-configuration. A failing host does not stop the
others; a summary ends the run.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDeploy(cmd.Context(), g, opts, args)
		},
	}
	opts.register(cmd, true)
	cmd.Flags().StringVar(&opts.action, "action", "switch", "switch-to-configuration `ACTION`: switch, boot, test or dry-activate")
	return cmd
}

func runDeploy(ctx context.Context, g *globals, opts deployOptions, args []string) error {
	if !validAction(opts.action) {
		return usageErrorf("--action %q: want switch, boot, test or dry-activate", opts.action)
	}
	inv, err := g.load(ctx, args, opts.selection, true, true)
	if err != nil {
		return err
	}
	for _, h := range inv.Selected {
		if !h.Deployable() {
			return usageErrorf("%s is build-only (deployment.targetHost = null): it cannot be deployed", h.Name)
		}
	}
	d, err := g.dialer()
	if err != nil {
		return err
	}
	// Resolve every target before anything runs, so a bad sshOptions or
	// ssh config entry stops the run with nothing done.
	for _, h := range inv.Selected {
		ep, err := d.Resolve(targetOf(h))
		if err == nil {
			_, err = push.NixSSHOpts(ep, g.sshConfig)
		}
		if err != nil {
			return usageErrorf("%s: %w", h.Name, err)
		}
	}
	builds, err := buildSelected(ctx, g, inv.Selected)
	if err != nil {
		return err
	}
	byName := map[string]*inventory.Host{}
	var names []string
	for _, h := range inv.Selected {
		byName[h.Name] = h
		names = append(names, h.Name)
	}
	results := rollout.Each(ctx, names, g.parallel, func(ctx context.Context, name string) error {
		b := builds[name]
		if b.Err != nil {
			return b.Err
		}
		return deployHost(ctx, g, d, byName[name], b.Toplevel, opts.action)
	})
	outcomes := make([]hostOutcome, len(results))
	for i, r := range results {
		outcomes[i] = hostOutcome{Host: r.Host, Toplevel: builds[r.Host].Toplevel, Duration: r.Duration, OK: r.Err == nil}
		if r.Err != nil {
			outcomes[i].Step, outcomes[i].Error = stepOf(r.Err)
		}
	}
	if ctx.Err() != nil {
		// Some hosts may have switched: say which, on stdout too.
		_ = g.summarize("deploy (interrupted)", outcomes)
		return ctx.Err()
	}
	return g.summarize("deploy", outcomes)
}

// deployHost pushes toplevel to one host and activates it there, over one
// SSH connection.
func deployHost(ctx context.Context, g *globals, d *remote.Dialer, h *inventory.Host, toplevel, action string) error {
	log := g.log.With("host", h.Name)
	start := time.Now()
	conn, err := d.Dial(ctx, targetOf(h))
	if err != nil {
		return rollout.Step("connect", err)
	}
	defer conn.Close()
	log.Info("connected", "to", conn.Endpoint().Destination()+" ("+conn.Endpoint().Addr()+")")

	if err := push.NixCopy(ctx, g.nix(), conn.Endpoint(), g.sshConfig, toplevel); err != nil {
		return rollout.Step("push", err)
	}
	log.Info("pushed", "toplevel", toplevel)

	var out activate.Options
	if g.verbose {
		w := g.handler.Lines(h.Name)
		defer w.Close()
		out.Stdout, out.Stderr = w, w
	} else {
		out.Stdout = io.Discard
	}
	if err := activate.Activate(ctx, conn, toplevel, action, out); err != nil {
		return rollout.Step("activate", err)
	}
	log.Info(fmt.Sprintf("%s done", action), "took", time.Since(start).Round(10*time.Millisecond).String())
	return nil
}

func validAction(a string) bool {
	for _, x := range activate.Actions {
		if x == a {
			return true
		}
	}
	return false
}
