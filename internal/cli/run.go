package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/push"
)

// runHosts checks every selected host can be reached as configured, gets
// the systems, then runs steps on each host over one SSH connection, at
// most --parallel at once, in the rollout the activation flags ask for
// (nil: every host, never halting), and summarises.
func (g *globals) runHosts(ctx context.Context, command string, p *plan, af *activateFlags, steps ...hostStep) error {
	// A build-only host named outright is a mistake; one that a glob or a
	// tag caught is left out.
	var hosts []*inventory.Host
	for _, h := range p.hosts {
		switch {
		case h.Deployable():
			hosts = append(hosts, h)
		case slices.Contains(p.named, h.Name):
			return usageErrorf("%s is build-only (deployment.targetHost = null): it cannot be deployed", h.Name)
		default:
			g.log.Warn("left out: build-only (deployment.targetHost = null)", "host", h.Name)
		}
	}
	if len(hosts) == 0 {
		return usageErrorf("every selected host is build-only (deployment.targetHost = null)")
	}
	p.hosts = hosts
	d, err := g.dialer()
	if err != nil {
		return err
	}
	// Resolve every target before anything runs, so a bad sshOptions or
	// ssh config entry stops the run with nothing done, and so does two
	// hosts resolving to one machine (for example two configurations that
	// leave networking.hostName at its default).
	targets := map[string]string{}
	for _, h := range p.hosts {
		ep, err := d.Resolve(targetOf(h))
		if err == nil && g.nixCopy() {
			_, err = push.NixSSHOpts(ep, g.sshConfig)
		}
		if err != nil {
			return usageErrorf("%s: %w", h.Name, err)
		}
		key := ep.Addr()
		for i := len(ep.Hops) - 1; i >= 0; i-- {
			key = ep.Hops[i].Addr() + " → " + key
		}
		if other, ok := targets[key]; ok {
			return usageErrorf("%s and %s both deploy to %s: one machine cannot run two systems (check deployment.targetHost)", other, h.Name, key)
		}
		targets[key] = h.Name
	}
	closures, err := p.closures(ctx, p.hosts)
	if err != nil {
		return err
	}
	// Dial the first hosts while this machine's own Nix calls run, so the
	// handshakes overlap them. (Connecting changes nothing on a host.) The
	// host's own connect takes over; a host that never runs lets go here.
	var aheadMu sync.Mutex
	ahead := map[string]bool{}
	takeOver := func(name string) {
		aheadMu.Lock()
		defer aheadMu.Unlock()
		if ahead[name] {
			delete(ahead, name)
			g.release(hostKey(name))
		}
	}
	for _, h := range p.hosts[:min(len(p.hosts), g.parallel)] {
		if closures[h.Name].Err == nil {
			g.dialAhead(ctx, hostKey(h.Name), targetOf(h))
			ahead[h.Name] = true
			defer takeOver(h.Name)
		}
	}
	// Hold every system as a GC root on this machine until the run ends,
	// so that a garbage collection meanwhile cannot take it.
	if err := g.holdRoots(ctx, closures); err != nil {
		return err
	}
	// The pushes' metadata: one nix path-info for every local system.
	if slices.ContainsFunc(steps, func(s hostStep) bool { return s.name == "push" }) && !g.nixCopy() {
		if tops := localTops(closures); len(tops) > 0 {
			if g.localInfos, err = g.nix().PathInfos(ctx, false, tops...); err != nil {
				return err
			}
			// Tell the shared reader how many hosts will want each path.
			for _, b := range closures {
				if b.Err != nil || !b.At.local() {
					continue
				}
				closure, err := nix.Closure(g.localInfos, b.Toplevel)
				if err != nil {
					return err
				}
				paths := make([]string, len(closure))
				for i, info := range closure {
					paths[i] = info.Path
				}
				g.sharedNARs().Expect(paths)
			}
		}
	}
	byName := map[string]*inventory.Host{}
	names := make([]string, len(p.hosts))
	for i, h := range p.hosts {
		byName[h.Name] = h
		names[i] = h.Name
	}
	ro := rollout.Options{Parallel: g.parallel, MaxFailures: rollout.NoLimit}
	if af != nil {
		ro = af.rollout(len(names), g.parallel)
	}
	results := rollout.Run(ctx, names, ro, func(ctx context.Context, name string) error {
		b := closures[name]
		if b.Err != nil {
			return b.Err
		}
		h := byName[name]
		start := time.Now()
		conn, err := g.connect(ctx, hostKey(name), targetOf(h))
		takeOver(name)
		if err != nil {
			return rollout.Step("connect", err)
		}
		defer g.release(hostKey(name))
		for _, s := range steps {
			if err := s.run(ctx, conn, h, b); err != nil {
				return rollout.Step(s.name, err)
			}
		}
		g.log.Debug(command+" finished", "host", name, "took", time.Since(start).Round(10*time.Millisecond).String())
		return nil
	})
	g.pushBar.close()
	if g.shared != nil {
		if st := g.shared.Stats(); st.Reused > 0 {
			g.log.Info(fmt.Sprintf("local store: %s serialised once (%s), sent to other hosts %s from memory", plural(st.Serialised, "path"), humanBytes(st.Bytes), plural(st.Reused, "time")))
		}
	}
	outcomes := make([]hostOutcome, len(results))
	for i, r := range results {
		outcomes[i] = hostOutcome{Host: r.Host, Toplevel: closures[r.Host].Toplevel, Duration: r.Duration, OK: r.Err == nil}
		var skipped *rollout.SkippedError
		switch {
		case errors.As(r.Err, &skipped):
			outcomes[i].Skipped, outcomes[i].Error = true, skipped.Reason
		case r.Err != nil:
			outcomes[i].Step, outcomes[i].Error = stepOf(r.Err)
		}
	}
	if ctx.Err() != nil {
		// Some hosts may have switched: say which, on stdout too.
		_ = g.summarize(command+" (interrupted)", outcomes)
		return ctx.Err()
	}
	return g.summarize(command, outcomes)
}
