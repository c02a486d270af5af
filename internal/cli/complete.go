package cli

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
)

// completeHosts completes host selectors: the flake's host names and its
// tags as @tag. Nothing is cached (deployctl stores nothing here), so the
// names come from a listing of nixosConfigurations, which evaluates no
// host, and the tags from one evaluation of the deployment options when
// that ends within tagsWithin; a flake slower than that completes names
// only.
func (g *globals) completeHosts(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	ref, err := nix.FlakeRef(g.flake)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	n := nix.New(g.inv.Env, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	type loaded struct {
		inv *inventory.Inventory
		err error
	}
	full := make(chan loaded, 1)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	go func() {
		// Nothing selected: a broken host is then left out (and named)
		// rather than failing the evaluation.
		inv, err := inventory.Load(loadCtx, n, ref, inventory.LoadOptions{})
		full <- loaded{inv, err}
	}()
	var names []string
	tags := map[string]bool{}
	select {
	case l := <-full:
		if l.err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		for _, b := range l.inv.Broken {
			names = append(names, b.Name)
		}
		for _, h := range l.inv.Hosts {
			names = append(names, h.Name)
			for _, t := range h.Tags {
				tags["@"+t] = true
			}
		}
	case <-time.After(g.tagsWithin):
		stopLoad() // too slow: no second evaluation beside the listing
		if names, err = inventory.HostNames(ctx, n, ref); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	out := slices.Concat(names, slices.Collect(maps.Keys(tags)))
	out = slices.DeleteFunc(out, func(s string) bool { return slices.Contains(args, s) || !strings.HasPrefix(s, toComplete) })
	slices.Sort(out)
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
