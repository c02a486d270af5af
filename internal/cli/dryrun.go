package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/internal/serve"
)

// loadDeployable evaluates every selected host's system (for plan and
// --dry-run, which show a deploy without running it) and returns the
// inventory and the deployable hosts.
func (g *globals) loadDeployable(ctx context.Context, args []string, sel selection) (*inventory.Inventory, []*inventory.Host, error) {
	inv, err := g.load(ctx, args, sel, true, true)
	if err != nil {
		return nil, nil, err
	}
	hosts, err := g.deployable(inv.Selected, namedHosts(args))
	return inv, hosts, err
}

// deployable are the selected hosts that have a target. A build-only
// host named outright is a mistake; one that a glob or a tag caught is
// left out, with a warning.
func (g *globals) deployable(selected []*inventory.Host, named []string) ([]*inventory.Host, error) {
	var hosts []*inventory.Host
	for _, h := range selected {
		switch {
		case h.Deployable():
			hosts = append(hosts, h)
		case slices.Contains(named, h.Name):
			return nil, usageErrorf("%s is build-only (deployment.targetHost = null): it cannot be deployed", h.Name)
		default:
			g.log.Warn("left out: build-only (deployment.targetHost = null)", "host", h.Name)
		}
	}
	if len(hosts) == 0 {
		return nil, usageErrorf("every selected host is build-only (deployment.targetHost = null)")
	}
	return hosts, nil
}

// runDryRun is deploy --dry-run: it evaluates, asks Nix what it would
// build, asks each host (read-only) which paths of its system it lacks,
// and runs switch-to-configuration dry-activate where the system is on
// the host already. Nothing is built, sent or changed anywhere.
func runDryRun(ctx context.Context, g *globals, opts deployOptions, args []string) error {
	if opts.source.closure != "" || opts.source.manifest != "" {
		return usageErrorf("--dry-run evaluates the flake: no --manifest or --closure")
	}
	inv, hosts, err := g.loadDeployable(ctx, args, opts.selection)
	if err != nil {
		return err
	}
	at, err := g.placeAll(hosts, inv.Hosts)
	if err != nil {
		return err
	}
	var reqs []build.Request
	for _, h := range hosts {
		if h.DrvPath != "" && at[h.Name].local() {
			reqs = append(reqs, build.Request{Host: h.Name, DrvPath: h.DrvPath, OutPath: h.OutPath})
		}
	}
	pending, err := build.Pending(ctx, g.nix(), reqs)
	if err != nil {
		return fmt.Errorf("nix-store --realise --dry-run: %w", err)
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	results := rollout.Each(ctx, names, g.parallel, func(ctx context.Context, name string) error {
		h := byName(hosts, name)
		if h.EvalError != "" {
			return rollout.Step("eval", fmt.Errorf("%s", h.EvalError))
		}
		switch n := pending[name]; {
		case !at[name].local():
			g.log.Info("would be built on "+at[name].on+" (its dry run is not asked there)", "host", name)
		case n > 0:
			g.log.Info(fmt.Sprintf("would build %s here", plural(n, "derivation")), "host", name)
		default:
			g.log.Info("built already", "host", name)
		}
		conn, err := g.connect(ctx, hostKey(name), targetOf(h))
		if err != nil {
			return rollout.Step("connect", err)
		}
		defer g.release(hostKey(name))
		if conn.Unprivileged() {
			return rollout.Step("dry-run", noRoot("deploy", conn.Endpoint().User))
		}
		ctx, closeLog, err := g.transcript(ctx, name, "dry-run")
		if err != nil {
			return rollout.Step("dry-run", err)
		}
		defer closeLog()
		return g.dryRunHost(ctx, conn, h)
	})
	outcomes := make([]hostOutcome, len(results))
	for i, r := range results {
		outcomes[i] = hostOutcome{Host: r.Host, Toplevel: byName(hosts, r.Host).OutPath, Duration: r.Duration, OK: r.Err == nil}
		if r.Err != nil {
			outcomes[i].Step, outcomes[i].Error = stepOf(r.Err)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return g.summarize("deploy --dry-run (nothing was changed)", outcomes)
}

// dryRunHost reports what a push would send to h and what its dry
// activation says, changing nothing on it.
func (g *globals) dryRunHost(ctx context.Context, conn *remote.Conn, h *inventory.Host) error {
	infos, err := g.nix().PathInfos(ctx, false, h.OutPath)
	if err != nil {
		g.log.Info("not built here yet: what the push would send is known once it is", "host", h.Name)
		return g.dryActivate(ctx, conn, h, false)
	}
	closure, err := nix.Closure(infos, h.OutPath)
	if err != nil {
		return rollout.Step("push", err)
	}
	paths := make([]string, len(closure))
	for i, info := range closure {
		paths[i] = info.Path
	}
	// A read-only session (no --write, no lock): a query only.
	sess, valid, err := serve.OpenQuery(ctx, conn, false, paths, false, false)
	if err != nil {
		return rollout.Step("push", fmt.Errorf("ask the host which paths it has: %w", err))
	}
	sess.Close()
	have := map[string]bool{}
	for _, p := range valid {
		have[p] = true
	}
	var missing int
	var bytes int64
	for _, info := range closure {
		if !have[info.Path] {
			missing++
			bytes += info.NarSize
		}
	}
	g.log.Info(fmt.Sprintf("would send %d of %d paths, %s", missing, len(closure), humanBytes(bytes)), "host", h.Name)
	return g.dryActivate(ctx, conn, h, have[h.OutPath])
}

// dryActivate runs the system's switch-to-configuration dry-activate on
// h, when the system is there.
func (g *globals) dryActivate(ctx context.Context, conn *remote.Conn, h *inventory.Host, there bool) error {
	if !there {
		err := conn.Run(ctx, remote.Cmd{Argv: []string{"nix-store", "--check-validity", h.OutPath}, Stdout: io.Discard, Stderr: io.Discard})
		if err != nil {
			g.log.Info("dry-activate: the system is not on the host yet", "host", h.Name)
			return nil
		}
	}
	var out bytes.Buffer
	start := time.Now()
	cmd := activate.DryActivateCmd(h.OutPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := conn.Run(ctx, cmd)
	if err != nil {
		return rollout.Step("dry-activate", fmt.Errorf("%w: %s", err, strings.TrimSpace(out.String())))
	}
	w := g.handler.Lines(h.Name)
	defer w.Close()
	fmt.Fprintf(w, "dry-activate (%s):\n", time.Since(start).Round(10*time.Millisecond))
	_, _ = io.Copy(w, &out)
	return nil
}
