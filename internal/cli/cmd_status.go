package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/remote"
)

type statusOptions struct{ selection }

func newStatusCommand(g *globals) *cobra.Command {
	var opts statusOptions
	cmd := &cobra.Command{
		Use:   "status [SELECTORS…|--all]",
		Short: "Show what each host runs and what deployctl last did there",
		Long: `For each selected host, read over SSH: the running system
(/run/current-system), the booted one (/run/booted-system), the system
profile's generation and system, whether a reboot is required (the running
kernel, initrd or kernel modules are not the booted ones), the deploy that
holds the host's lock, if any, and the last line of the host's deploy
journal (/var/lib/deployctl/journal.jsonl). Nothing is built and nothing
changes. --json prints it all on stdout.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(cmd.Context(), g, opts, args)
		},
	}
	opts.register(cmd, true)
	return cmd
}

// hostsOnly is a plan for commands that read or act on the hosts' own
// systems: the flake's deployment options, no evaluation of the systems.
func (g *globals) hostsOnly(ctx context.Context, args []string, sel selection) (*plan, error) {
	inv, err := g.load(ctx, args, sel, true, false)
	if err != nil {
		return nil, err
	}
	return &plan{hosts: inv.Selected, named: namedHosts(args), closures: func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
		out := map[string]built{}
		for _, h := range hosts {
			out[h.Name] = built{At: placement{on: "target"}}
		}
		return out, nil
	}}, nil
}

// hostsWithSpecs is hostsOnly with the hosts' activation options read
// (and checked).
func (g *globals) hostsWithSpecs(ctx context.Context, args []string, sel selection) (*plan, map[string]activationSpec, error) {
	p, err := g.hostsOnly(ctx, args, sel)
	if err != nil {
		return nil, nil, err
	}
	specs, err := activationSpecs(p.hosts)
	return p, specs, err
}

type statusEntry struct {
	Host string `json:"host"`
	*activate.HostStatus
	Error string `json:"error,omitempty"`
}

func runStatus(ctx context.Context, g *globals, opts statusOptions, args []string) error {
	p, err := g.hostsOnly(ctx, args, opts.selection)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	found := map[string]*activate.HostStatus{}
	step := hostStep{name: "status", run: func(ctx context.Context, conn *remote.Conn, h *inventory.Host, _ built) error {
		st, err := activate.Status(ctx, conn)
		if err != nil {
			return err
		}
		mu.Lock()
		found[h.Name] = st
		mu.Unlock()
		return nil
	}}
	outcomes, err := g.runOnHosts(ctx, "status", p, nil, step)
	if err != nil {
		return err
	}
	entries := make([]statusEntry, len(outcomes))
	for i, o := range outcomes {
		entries[i] = statusEntry{Host: o.Host, HostStatus: found[o.Host]}
		if !o.OK {
			entries[i].Error = o.Error
			if o.Step != "" {
				entries[i].Error = o.Step + ": " + o.Error
			}
		}
	}
	if g.json {
		enc := json.NewEncoder(g.inv.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Version int           `json:"version"`
			Hosts   []statusEntry `json:"hosts"`
		}{1, entries}); err != nil {
			return err
		}
	}
	printStatus(g.inv.Stderr, entries)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return failures(outcomes)
}

// printStatus writes a block per host, for people.
func printStatus(w interface{ Write([]byte) (int, error) }, entries []statusEntry) {
	for _, e := range entries {
		fmt.Fprintf(w, "%s\n", e.Host)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		if e.HostStatus == nil {
			fmt.Fprintf(tw, "  unreachable\t%s\n", e.Error)
			tw.Flush()
			continue
		}
		st := e.HostStatus
		or := func(s, none string) string {
			if s == "" {
				return none
			}
			return s
		}
		fmt.Fprintf(tw, "  running\t%s\n", or(st.Running, "none"))
		booted := or(st.Booted, "none")
		if st.RebootRequired {
			booted += " (reboot required: its kernel, initrd or modules differ from the running system's)"
		}
		fmt.Fprintf(tw, "  booted\t%s\n", booted)
		if st.Profile != "" {
			fmt.Fprintf(tw, "  profile\tgeneration %d: %s\n", st.Generation, st.Profile)
		} else {
			fmt.Fprintf(tw, "  profile\tnone\n")
		}
		if st.Lock != nil {
			fmt.Fprintf(tw, "  locked by\t%s\n", st.Lock)
		}
		if d := st.LastDeploy; d != nil {
			what := d.Action
			if d.Rollback {
				what = "rollback (" + d.Action + ")"
			}
			line := fmt.Sprintf("%s %s by %s@%s: %s", d.Time.Local().Format(time.DateTime), what, d.User, d.Machine, d.Result)
			if d.Result == "ok" {
				line += ", " + or(d.Previous, "no system") + " → " + d.New
			} else if d.Error != "" {
				first, _, _ := strings.Cut(d.Error, "\n")
				line += ": " + first
			}
			fmt.Fprintf(tw, "  last deploy\t%s\n", line)
		} else {
			fmt.Fprintf(tw, "  last deploy\tnone recorded\n")
		}
		tw.Flush()
	}
}
