package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/rollout"
)

type buildOptions struct {
	selection
	manifestOut string
	outLink     string
}

func newBuildCommand(g *globals) *cobra.Command {
	var opts buildOptions
	cmd := &cobra.Command{
		Use:   "build [SELECTORS…|--all]",
		Short: "Evaluate and build the selected hosts' systems, locally",
		Long: `Evaluate the selected hosts in one Nix evaluation and build all their
config.system.build.toplevel derivations in one 'nix build', so shared
dependencies are built once. A host whose evaluation or build fails is
reported with Nix's error; the others still build.

--manifest-out writes a manifest (and --json prints it on stdout): per host
its system, derivation, closure size and deployment options, so that push,
activate and deploy --manifest can run later, elsewhere, without evaluating.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBuild(cmd.Context(), g, opts, args)
		},
	}
	opts.register(cmd, false)
	cmd.Flags().StringVar(&opts.manifestOut, "manifest-out", "", "write the build manifest to `FILE`")
	cmd.Flags().StringVar(&opts.outLink, "out-link", "", "keep each built system from garbage collection with a link `DIR`/result-HOST")
	registerMaxJobs(cmd, g)
	return cmd
}

// registerMaxJobs adds --max-jobs to a command that may build.
func registerMaxJobs(cmd *cobra.Command, g *globals) {
	cmd.Flags().IntVar(&g.maxJobs, "max-jobs", 0, "build at most `N` derivations at once (default: Nix's own max-jobs setting)")
}

// hostOutcome is one host's result of a command, for the summary.
type hostOutcome struct {
	Host     string        `json:"host"`
	OK       bool          `json:"ok"`
	Step     string        `json:"step,omitempty"`
	Error    string        `json:"error,omitempty"`
	Toplevel string        `json:"toplevel,omitempty"`
	Duration time.Duration `json:"-"`
	Millis   int64         `json:"durationMs"`
}

func runBuild(ctx context.Context, g *globals, opts buildOptions, args []string) error {
	inv, err := g.load(ctx, args, opts.selection, true, true)
	if err != nil {
		return err
	}
	results, err := buildSelected(ctx, g, inv.Selected)
	if err != nil {
		return err
	}
	outcomes := make([]hostOutcome, len(inv.Selected))
	for i, h := range inv.Selected {
		outcomes[i] = hostOutcome{Host: h.Name, Toplevel: results[h.Name].Toplevel}
		if err := results[h.Name].Err; err != nil {
			outcomes[i].Step, outcomes[i].Error = stepOf(err)
		} else {
			outcomes[i].OK = true
		}
	}
	if opts.outLink != "" {
		tops := map[string]string{}
		for _, h := range inv.Selected {
			if t := results[h.Name].Toplevel; t != "" {
				tops[h.Name] = t
			}
		}
		if err := build.AddRoots(ctx, g.nix(), opts.outLink, tops); err != nil {
			return err
		}
	}
	if opts.manifestOut != "" || g.json {
		m, err := g.manifest(ctx, inv, results)
		if err != nil {
			return err
		}
		if opts.manifestOut != "" {
			if err := build.WriteManifest(opts.manifestOut, m); err != nil {
				return err
			}
			g.log.Info("wrote manifest " + opts.manifestOut)
		}
		if g.json {
			enc := json.NewEncoder(g.inv.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(m); err != nil {
				return err
			}
		}
	}
	printSummary(g.inv.Stderr, "build", outcomes)
	return failures(outcomes)
}

// manifest records a build: the flake as given and locked, and per host
// its system, derivation, closure size and deployment options.
func (g *globals) manifest(ctx context.Context, inv *inventory.Inventory, results map[string]built) (*build.Manifest, error) {
	n := g.nix()
	flake, err := build.ResolveFlake(ctx, n, inv.FlakeRef)
	if err != nil {
		return nil, err
	}
	var tops []string
	for _, h := range inv.Selected {
		if t := results[h.Name].Toplevel; t != "" {
			tops = append(tops, t)
		}
	}
	stats, err := build.Closures(ctx, n, tops)
	if err != nil {
		return nil, err
	}
	m := &build.Manifest{Version: build.ManifestVersion, Deployctl: Version, Created: time.Now().UTC().Truncate(time.Second), Flake: flake, Hosts: map[string]*build.ManifestHost{}}
	for _, h := range inv.Selected {
		r := results[h.Name]
		mh := &build.ManifestHost{DrvPath: h.DrvPath, Deployment: h.Deployment}
		if r.Err != nil {
			mh.Step, mh.Error = stepOf(r.Err)
		} else {
			st := stats[r.Toplevel]
			mh.Toplevel, mh.BuiltOn, mh.ClosurePaths, mh.NarSize = r.Toplevel, "local", st.Paths, st.NarSize
		}
		m.Hosts[h.Name] = mh
	}
	return m, nil
}

// built is a host's toplevel, or the error (step-tagged) that kept it from
// being built.
type built struct {
	Toplevel string
	Err      error
}

// buildSelected builds every selected host whose evaluation succeeded, in
// one build.
func buildSelected(ctx context.Context, g *globals, hosts []*inventory.Host) (map[string]built, error) {
	out := map[string]built{}
	var reqs []build.Request
	for _, h := range hosts {
		if h.EvalError != "" {
			out[h.Name] = built{Err: rollout.Step("eval", fmt.Errorf("%s", h.EvalError))}
			g.log.Info("evaluation failed", "host", h.Name)
			continue
		}
		reqs = append(reqs, build.Request{Host: h.Name, DrvPath: h.DrvPath, OutPath: h.OutPath})
	}
	if len(reqs) > 0 {
		g.log.Info(fmt.Sprintf("building %d systems", len(reqs)))
	}
	opts := build.Options{MaxJobs: g.maxJobs}
	if g.verbose {
		// Nix's build log, each line under the host whose system it is
		// (a shared dependency's under its derivation's name).
		opts.OnLog = func(host, drv, line string) {
			if host == "" {
				host = "build " + strings.TrimSuffix(drv[strings.IndexByte(drv, '-')+1:], ".drv")
			}
			g.log.Info(line, "host", host)
		}
	}
	results, err := build.Build(ctx, g.nix(), reqs, opts)
	if err != nil {
		return nil, err
	}
	for _, r := range results {
		out[r.Host] = built{Toplevel: r.Toplevel, Err: rollout.Step("build", r.Err)}
		if r.Err != nil {
			g.log.Info("build failed", "host", r.Host)
		} else {
			g.log.Info("built", "host", r.Host, "toplevel", r.Toplevel)
		}
	}
	return out, nil
}

// summarize prints the outcomes (a table on stderr; JSON on stdout with
// --json) and returns the error that sets the exit code.
func (g *globals) summarize(command string, outcomes []hostOutcome) error {
	for i := range outcomes {
		outcomes[i].Millis = outcomes[i].Duration.Milliseconds()
	}
	if g.json {
		enc := json.NewEncoder(g.inv.Stdout)
		enc.SetIndent("", "  ")
		doc := struct {
			Version int           `json:"version"`
			Command string        `json:"command"`
			Hosts   []hostOutcome `json:"hosts"`
		}{1, command, outcomes}
		if err := enc.Encode(doc); err != nil {
			return err
		}
	}
	printSummary(g.inv.Stderr, command, outcomes)
	return failures(outcomes)
}

// failures is the error that sets the exit code for outcomes, or nil.
func failures(outcomes []hostOutcome) error {
	failed := 0
	for _, o := range outcomes {
		if !o.OK {
			failed++
		}
	}
	if failed > 0 {
		return &hostsFailedError{failed: failed, total: len(outcomes)}
	}
	return nil
}
