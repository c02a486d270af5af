package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

type listOptions struct{ selection }

func newListCommand(g *globals) *cobra.Command {
	var opts listOptions
	cmd := &cobra.Command{
		Use:   "list [SELECTORS…]",
		Short: "List the flake's hosts, their SSH targets and tags",
		Long: `List the hosts of the flake's nixosConfigurations: the SSH destination
deployctl would use (after applying the SSH config), tags, and whether the
host is deployable (deployment.targetHost = null makes it build-only).
With selectors, only the hosts they match.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runList(cmd.Context(), g, opts, args)
		},
	}
	opts.register(cmd, true)
	return cmd
}

type listEntry struct {
	Name       string   `json:"name"`
	Deployable bool     `json:"deployable"`
	TargetHost *string  `json:"targetHost"`
	HostName   string   `json:"hostName,omitempty"`
	Port       int      `json:"port,omitempty"`
	User       string   `json:"user,omitempty"`
	Tags       []string `json:"tags"`
}

func runList(ctx context.Context, g *globals, opts listOptions, args []string) error {
	inv, err := g.load(ctx, args, opts.selection, false, false)
	if err != nil {
		return err
	}
	hosts := inv.Selected
	if len(args) == 0 && !opts.all {
		hosts = inv.Hosts
	}
	d, err := g.dialer()
	if err != nil {
		return err
	}
	entries := make([]listEntry, 0, len(hosts))
	for _, h := range hosts {
		e := listEntry{Name: h.Name, Deployable: h.Deployable(), Tags: h.Tags}
		if e.Tags == nil {
			e.Tags = []string{}
		}
		if h.Deployable() {
			th := h.TargetHost
			e.TargetHost = &th
			ep, err := d.Resolve(targetOf(h))
			if err != nil {
				return usageErrorf("%s: %w", h.Name, err)
			}
			e.HostName, e.Port, e.User = ep.HostName, ep.Port, ep.User
		}
		entries = append(entries, e)
	}
	if g.json {
		enc := json.NewEncoder(g.inv.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	// A table is for people: stderr, like all human output (--json is the
	// form to pipe).
	tw := tabwriter.NewWriter(g.inv.Stderr, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTARGET\tTAGS\tDEPLOYABLE")
	for _, e := range entries {
		target := "-"
		if e.TargetHost != nil {
			target = e.User + "@" + *e.TargetHost + ":" + strconv.Itoa(e.Port)
			if *e.TargetHost != e.HostName {
				target += " (" + e.HostName + ")"
			}
		}
		deployable := "yes"
		if !e.Deployable {
			deployable = "no (build-only)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, target, strings.Join(e.Tags, ","), deployable)
	}
	return tw.Flush()
}
