package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/events"
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
		Short: "Evaluate and build the selected hosts' systems",
		Long: `Evaluate the selected hosts in one Nix evaluation and build all their
config.system.build.toplevel derivations in one 'nix build', so shared
dependencies are built once. A host whose evaluation or build fails is
reported with Nix's error; the others still build.

A host with deployment.buildOnTarget (or --build-on-target) is built on
itself, one with deployment.buildHost (or --build-host) on that machine: a
host of the flake or any SSH destination. The derivations are copied there,
built under a GC root, and the system stays there until pushed from there.

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
	registerBuildFlags(cmd, g)
	return cmd
}

// hostOutcome is one host's result of a command, for the summary.
type hostOutcome struct {
	Host string `json:"host"`
	OK   bool   `json:"ok"`
	// Skipped is a host a halted rollout never started.
	Skipped  bool          `json:"skipped,omitempty"`
	Step     string        `json:"step,omitempty"`
	Error    string        `json:"error,omitempty"`
	Toplevel string        `json:"toplevel,omitempty"`
	Duration time.Duration `json:"-"`
	Millis   int64         `json:"durationMs"`
}

func runBuild(ctx context.Context, g *globals, opts buildOptions, args []string) error {
	inv, err := g.load(ctx, args, opts.selection, true, g.evalChunk == 0)
	if err != nil {
		return err
	}
	if err := g.loadHooks(inv.Selected); err != nil {
		return err
	}
	g.board = g.startBoard()
	results, err := g.buildHooks(ctx, inv.Selected, func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
		return g.evalAndBuild(ctx, inv, hosts)
	})
	g.board.close()
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
	printSummary(g.inv.Stderr, "build", outcomes, g.color)
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
		if r := results[h.Name]; r.Toplevel != "" && r.At.local() {
			tops = append(tops, r.Toplevel)
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
			if r.Closure != nil {
				st = *r.Closure
			}
			mh.Toplevel, mh.BuiltOn, mh.ClosurePaths, mh.NarSize = r.Toplevel, r.At.on, st.Paths, st.NarSize
			if !r.At.local() && r.At.on != "target" {
				if m.Builders == nil {
					m.Builders = map[string]build.Builder{}
				}
				m.Builders[r.At.on] = manifestBuilder(r.At.target)
			}
		}
		m.Hosts[h.Name] = mh
	}
	return m, nil
}

// built is a host's system, or the error (step-tagged) that kept it from
// being built.
type built struct {
	Toplevel string
	Err      error
	// At is where the system is: here, on its target, or on a builder.
	At placement
	// Closure is its size, when measured where it was built.
	Closure *build.ClosureStats
	// Reported says Err's failed event was emitted where it happened.
	Reported bool
}

// evalAndBuild builds hosts. Their toplevels are evaluated already, unless
// --eval-chunk asks for them to be evaluated here, a chunk at a time, each
// chunk building while the next evaluates.
func (g *globals) evalAndBuild(ctx context.Context, inv *inventory.Inventory, hosts []*inventory.Host) (map[string]built, error) {
	defer g.buildBar.close()
	if g.evalChunk == 0 {
		return buildSelected(ctx, g, hosts, inv.Hosts)
	}
	// Where each host builds is known without its toplevel: refuse a bad
	// placement before the first chunk builds.
	if _, err := g.placeAll(hosts, inv.Hosts); err != nil {
		return nil, err
	}
	out := map[string]built{}
	var mu sync.Mutex
	var buildErr error
	var wg sync.WaitGroup
	for i := 0; i < len(hosts) && ctx.Err() == nil; i += g.evalChunk {
		chunk := hosts[i:min(i+g.evalChunk, len(hosts))]
		g.log.Info(fmt.Sprintf("evaluating hosts %d-%d of %d", i+1, i+len(chunk), len(hosts)))
		if err := inventory.Toplevels(ctx, g.nix(), inv.FlakeRef, chunk); err != nil {
			if ctx.Err() != nil {
				wg.Wait()
				return nil, ctx.Err()
			}
			// This chunk's evaluation failed as a whole (its nix killed,
			// say): its hosts fail, the other chunks go on.
			for _, h := range chunk {
				h.EvalError = fmt.Sprintf("evaluating hosts %d-%d of %d together: %v", i+1, i+len(chunk), len(hosts), err)
			}
		}
		wg.Go(func() {
			res, err := buildSelected(ctx, g, chunk, inv.Hosts)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				buildErr = errors.Join(buildErr, err)
			}
			maps.Copy(out, res)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, buildErr
}

// buildSelected builds every selected host whose evaluation succeeded:
// those built here in one nix build, and at the same time those built
// elsewhere, each machine's in one go. fleet is every host of the flake
// (a buildHost may name one).
func buildSelected(ctx context.Context, g *globals, hosts, fleet []*inventory.Host) (map[string]built, error) {
	at, err := g.placeAll(hosts, fleet)
	if err != nil {
		return nil, err
	}
	out := map[string]built{}
	var local []build.Request
	remote := map[string][]build.Request{}
	places := map[string]placement{} // by machine
	var keys []string
	for _, h := range hosts {
		if h.EvalError != "" {
			out[h.Name] = built{Err: rollout.Step("eval", fmt.Errorf("%s", h.EvalError)), Reported: true}
			g.events.Emit(events.Event{Type: events.Step, Host: h.Name, Step: "eval", State: events.Failed, Error: h.EvalError})
			g.log.Info("evaluation failed", "host", h.Name)
			continue
		}
		p := at[h.Name]
		req := build.Request{Host: h.Name, DrvPath: h.DrvPath, OutPath: h.OutPath}
		if p.local() {
			local = append(local, req)
			continue
		}
		if _, ok := places[p.key]; !ok {
			keys = append(keys, p.key)
			places[p.key] = p
		}
		remote[p.key] = append(remote[p.key], req)
	}
	var mu sync.Mutex
	started := map[string]time.Time{}
	start := func(reqs []build.Request) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reqs {
			started[r.Host] = time.Now()
			g.events.Emit(events.Event{Type: events.Step, Host: r.Host, Step: "build", State: events.Started, Toplevel: r.OutPath})
		}
	}
	record := func(results []build.Result) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range results {
			p, ok := at[r.Host]
			if !ok {
				p = placement{on: "local"}
			}
			out[r.Host] = built{Toplevel: r.Toplevel, Err: rollout.Step("build", r.Err), At: p, Closure: r.Closure, Reported: true}
			ev := events.Event{Type: events.Step, Host: r.Host, Step: "build", State: events.Done, DurationMs: time.Since(started[r.Host]).Milliseconds()}
			if r.Err != nil {
				ev.State, ev.Error = events.Failed, r.Err.Error()
			}
			g.events.Emit(ev)
			switch {
			case r.Err != nil:
				g.log.Info("build failed", "host", r.Host)
			case p.local():
				g.log.Info("built", "host", r.Host, "toplevel", r.Toplevel)
			case p.on == "target":
				g.log.Info("built on the target", "host", r.Host, "toplevel", r.Toplevel)
			default:
				g.log.Info("built on "+p.target.Name, "host", r.Host, "toplevel", r.Toplevel)
			}
		}
	}
	var wg sync.WaitGroup
	var localErr error
	if len(local) > 0 {
		g.log.Info("building " + plural(len(local), "system"))
		rootDir, err := g.rootDir("build")
		if err != nil {
			return nil, err
		}
		onProgress := g.buildBar.part()
		start(local)
		wg.Go(func() {
			g.announce(ctx, local)
			results, err := build.Build(ctx, g.nix(), local, build.Options{MaxJobs: g.maxJobs, OnLog: g.buildLog(), OnProgress: onProgress, RootDir: rootDir})
			if err != nil {
				localErr = err
				return
			}
			record(results)
		})
	}
	for _, k := range keys {
		if places[k].on != "target" {
			g.pin(k)
		}
		wg.Go(func() {
			p, reqs := places[k], remote[k]
			g.log.Info("building " + plural(len(reqs), "system") + " on " + p.target.Name)
			start(reqs)
			failAll := func(err error) {
				failed := make([]build.Result, len(reqs))
				for i, r := range reqs {
					failed[i] = build.Result{Host: r.Host, DrvPath: r.DrvPath, Err: err}
				}
				record(failed)
			}
			conn, err := g.connect(ctx, k, p.target)
			if err != nil {
				failAll(fmt.Errorf("connect to build host %s: %w", p.target.Name, err))
				return
			}
			defer g.release(k)
			opts := build.RemoteOptions{MaxJobs: g.maxJobs, OnPending: g.announceOne}
			if g.verbose {
				opts.Log = g.handler.Lines
			}
			done := g.buildTurn(k)
			defer done()
			bctx, closeLog, err := g.transcript(ctx, p.target.Name, "build")
			if err != nil {
				failAll(err)
				return
			}
			defer closeLog()
			record(build.Remote(bctx, g.nix(), conn, reqs, opts))
		})
	}
	wg.Wait()
	if localErr != nil {
		return nil, localErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// announce says, per host, how many derivations its system needs built
// here. It is only information: when Nix cannot say, nothing is said.
func (g *globals) announce(ctx context.Context, reqs []build.Request) {
	pending, err := build.Pending(ctx, g.nix(), reqs)
	if err != nil {
		g.log.Debug("cannot count the derivations to build", "err", err.Error())
		return
	}
	for _, r := range reqs {
		g.announceOne(r.Host, pending[r.Host])
	}
}

func (g *globals) announceOne(host string, n int) {
	if n > 0 {
		g.log.Info("building ("+plural(n, "derivation")+")", "host", host)
	} else {
		g.log.Info("building (nothing to build: in the store already)", "host", host)
	}
}

// plural is "1 system", "2 systems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// buildLog shows Nix's build log with -v, each line under the host whose
// system it is (a shared dependency's under its derivation's name).
func (g *globals) buildLog() func(host, drv, line string) {
	if !g.verbose {
		return nil
	}
	return func(host, drv, line string) {
		if host == "" {
			host = "build " + strings.TrimSuffix(drv[strings.IndexByte(drv, '-')+1:], ".drv")
		}
		g.log.Info(line, "host", host)
	}
}

// summarize prints the outcomes (a table on stderr; JSON on stdout with
// --json) and returns the error that sets the exit code.
func (g *globals) summarize(command string, outcomes []hostOutcome) error {
	for i := range outcomes {
		outcomes[i].Millis = outcomes[i].Duration.Milliseconds()
	}
	switch {
	case g.events != nil:
		g.events.Emit(events.Event{Type: events.Summary, Command: command, Hosts: outcomes})
	case g.json:
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
	printSummary(g.inv.Stderr, command, outcomes, g.color)
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
