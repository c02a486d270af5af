package cli

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
)

// completeHosts completes host selectors: the flake's host names and its
// tags as @tag, read with one evaluation of the deployment options (no
// system is evaluated, nothing is stored).
func (g *globals) completeHosts(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	ref, err := nix.FlakeRef(g.flake)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	n := nix.New(g.inv.Env, slog.New(slog.NewTextHandler(io.Discard, nil)))
	// Nothing selected: a broken host is then left out (and named) rather
	// than failing the evaluation; a slow flake is given up on.
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	inv, err := inventory.Load(ctx, n, ref, inventory.LoadOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, b := range inv.Broken {
		out = append(out, b.Name)
	}
	tags := map[string]bool{}
	for _, h := range inv.Hosts {
		if !slices.Contains(args, h.Name) {
			out = append(out, h.Name)
		}
		for _, t := range h.Tags {
			tags["@"+t] = true
		}
	}
	for t := range tags {
		if !slices.Contains(args, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	out = slices.DeleteFunc(out, func(s string) bool { return !strings.HasPrefix(s, toComplete) })
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeActions completes --action.
func completeActions(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{"switch", "boot", "test", "dry-activate"}, cobra.ShellCompDirectiveNoFileComp
}

// completion wires completion into the commands: host selectors for every
// command that selects hosts, actions for --action, steps for --only and
// --skip.
func (g *globals) completion(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Flags().Lookup("all") != nil {
			c.ValidArgsFunction = g.completeHosts
		}
		if c.Flags().Lookup("action") != nil {
			_ = c.RegisterFlagCompletionFunc("action", completeActions)
		}
		for _, f := range []string{"only", "skip"} {
			if c.Flags().Lookup(f) != nil {
				_ = c.RegisterFlagCompletionFunc(f, cobra.FixedCompletions(deploySteps, cobra.ShellCompDirectiveNoFileComp))
			}
		}
	}
}
