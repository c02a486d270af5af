package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/remote"
)

type rollbackOptions struct {
	selection
	activation activateFlags
}

func newRollbackCommand(g *globals) *cobra.Command {
	var opts rollbackOptions
	cmd := &cobra.Command{
		Use:   "rollback [SELECTORS…|--all]",
		Short: "Put hosts back on the system that ran before the last deploy",
		Long: `For each selected host, read the last line of its deploy journal
(/var/lib/deployctl/journal.jsonl) and activate again the system that ran
before that deploy, with the deploy's own action (switch, boot or test),
exactly as 'deployctl activate' does: under the host's lock, with the
dead-man's switch and the host's health checks, going back when they fail.
A host is refused, and left as it is, when its last deploy did not stick
(it failed or was rolled back already), when it recorded no earlier system,
or when the host no longer runs what that deploy put there (something else
changed it since). A rollback is itself journaled, so a second rollback
returns to the system the first one left.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRollback(cmd.Context(), g, opts, args)
		},
	}
	opts.selection.register(cmd, true)
	opts.activation.registerRollout(cmd)
	return cmd
}

func runRollback(ctx context.Context, g *globals, opts rollbackOptions, args []string) error {
	opts.activation.action = "switch" // each host's comes from its journal
	if err := opts.activation.check(); err != nil {
		return err
	}
	p, specs, err := g.hostsWithSpecs(ctx, args, opts.selection)
	if err != nil {
		return err
	}
	step := hostStep{name: "rollback", finish: true, root: true, run: func(ctx context.Context, conn *remote.Conn, h *inventory.Host, _ built) error {
		st, err := activate.Status(ctx, conn)
		if err != nil {
			return err
		}
		target, action, err := rollbackTarget(st)
		if err != nil {
			return err
		}
		f := opts.activation
		f.action, f.rollback = action, true
		g.log.Info(fmt.Sprintf("rolling back to %s (%s)", target, action), "host", h.Name)
		return g.activateStep(f, specs).run(ctx, conn, h, built{Toplevel: target})
	}}
	return g.runHosts(ctx, "rollback", p, &opts.activation, step)
}

// rollbackTarget is the system and the action that undo a host's last
// deploy, or why there is none.
func rollbackTarget(st *activate.HostStatus) (target, action string, err error) {
	d := st.LastDeploy
	switch {
	case d == nil:
		return "", "", errors.New("the host's journal records no deploy: nothing to roll back")
	case d.Result == "rolled back":
		return "", "", fmt.Errorf("the last deploy (%s, %s) was rolled back already: the host runs what ran before it", d.ID, d.Action)
	case d.Result != "ok" && d.RolledBack:
		return "", "", fmt.Errorf("the last deploy (%s, %s) failed and was rolled back already", d.ID, d.Action)
	}
	// An ok deploy, or a failed one left in place (--no-rollback, or a
	// rollback that failed): undo it, if the host still has it.
	current, target := st.Running, d.Previous
	if d.Action == "boot" {
		current, target = st.Profile, d.PreviousProfile
	}
	switch {
	case current != d.New:
		return "", "", fmt.Errorf("the last deploy (%s) put %s there, but the host has %s now: something else changed it since; deploy the system you want instead", d.ID, d.New, current)
	case target == "":
		return "", "", fmt.Errorf("the last deploy (%s) recorded no earlier system to go back to", d.ID)
	}
	return target, d.Action, nil
}
