package cli

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deployctl/deployctl/internal/events"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/push"
)

// runHosts checks every selected host can be reached as configured, gets
// the systems, then runs steps on each host over one SSH connection, at
// most --parallel at once, in the rollout the activation flags ask for
// (nil: every host, never halting), and summarises.
func (g *globals) runHosts(ctx context.Context, command string, p *plan, af *activateFlags, steps ...hostStep) error {
	if g.json {
		// --json: the run as an event stream, the summary its last event.
		g.events = events.NewStream(g.inv.Stdout)
	}
	g.board = g.startBoard()
	outcomes, err := g.runOnHosts(ctx, command, p, af, steps...)
	g.board.close()
	if err != nil {
		if g.events.Started() {
			// The stream ends with its summary, here the run's error.
			g.events.Emit(events.Event{Type: events.Summary, Command: command, Error: err.Error()})
		}
		return err
	}
	if ctx.Err() != nil {
		// Some hosts may have switched: say which, on stdout too.
		_ = g.summarize(command+" (interrupted)", outcomes)
		return ctx.Err()
	}
	return g.summarize(command, outcomes)
}

// runOnHosts is runHosts without the summary: each host's outcome.
func (g *globals) runOnHosts(ctx context.Context, command string, p *plan, af *activateFlags, steps ...hostStep) ([]hostOutcome, error) {
	hosts, err := g.deployable(p.hosts, p.named)
	if err != nil {
		return nil, err
	}
	p.hosts = hosts
	d, err := g.dialer()
	if err != nil {
		return nil, err
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
			return nil, usageErrorf("%s: %w", h.Name, err)
		}
		if i := slices.IndexFunc(steps, func(s hostStep) bool { return s.root }); i >= 0 && remote.Unprivileged(ep.User, h.PrivilegeEscalationCommand) {
			return nil, usageErrorf("%s: %w", h.Name, noRoot(steps[i].name, ep.User))
		}
		key := ep.Addr()
		for i := len(ep.Hops) - 1; i >= 0; i-- {
			key = ep.Hops[i].Addr() + " → " + key
		}
		if other, ok := targets[key]; ok {
			return nil, usageErrorf("%s and %s both deploy to %s: one machine cannot run two systems (check deployment.targetHost)", other, h.Name, key)
		}
		targets[key] = h.Name
	}
	if err := g.loadHooks(p.hosts); err != nil {
		return nil, err
	}
	build := p.closures
	if p.builds {
		build = func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
			return g.buildHooks(ctx, hosts, p.closures)
		}
	}
	// Dial the first hosts while this machine's own Nix calls run, so the
	// handshakes overlap them. (Connecting changes nothing on a host.) The
	// host's own connect takes over; a host that never runs lets go here.
	// Hosts are dialled once their systems are known to be here: before
	// the closures' checks when every one visibly is (p.present), so a
	// run that fails them contacts no host; else after.
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
	defer func() {
		for _, h := range p.hosts {
			takeOver(h.Name)
		}
	}()
	dialAhead := func(ok func(name string) bool) {
		for _, h := range p.hosts[:min(len(p.hosts), g.parallel)] {
			if !ahead[h.Name] && ok(h.Name) {
				g.dialAhead(ctx, hostKey(h.Name), targetOf(h))
				ahead[h.Name] = true
			}
		}
	}
	if p.present != nil && !slices.ContainsFunc(p.hosts, func(h *inventory.Host) bool { return !p.present(h.Name) }) {
		dialAhead(func(string) bool { return true })
	}
	closures, err := build(ctx, p.hosts)
	if err != nil {
		return nil, err
	}
	for _, h := range p.hosts {
		if closures[h.Name].Err != nil {
			takeOver(h.Name)
		}
	}
	dialAhead(func(name string) bool { return closures[name].Err == nil })
	// Hold every system as a GC root on this machine until the run ends,
	// so that a garbage collection meanwhile cannot take it.
	if err := g.holdRoots(ctx, closures); err != nil {
		return nil, err
	}
	// The pushes' metadata: one nix path-info for every local system.
	if slices.ContainsFunc(steps, func(s hostStep) bool { return s.name == "push" }) && !g.nixCopy() {
		if tops := localTops(closures); len(tops) > 0 {
			if g.localInfos, err = g.nix().PathInfos(ctx, false, tops...); err != nil {
				return nil, err
			}
			// Tell the shared reader how many hosts will want each path.
			for _, b := range closures {
				if b.Err != nil || !b.At.local() {
					continue
				}
				closure, err := nix.Closure(g.localInfos, b.Toplevel)
				if err != nil {
					return nil, err
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
	stopNotes := g.noteInterrupts(ctx)
	results := rollout.Run(ctx, names, ro, func(ctx context.Context, name string) error {
		b := closures[name]
		if b.Err != nil {
			if !b.Reported {
				step, msg := stepOf(b.Err)
				g.events.Emit(events.Event{Type: events.Step, Host: name, Step: step, State: events.Failed, Error: msg})
			}
			return b.Err
		}
		h := byName[name]
		start := time.Now()
		conn, err := g.connect(ctx, hostKey(name), targetOf(h))
		takeOver(name)
		if err != nil {
			g.events.Emit(events.Event{Type: events.Step, Host: name, Step: "connect", State: events.Failed, Error: err.Error()})
			return rollout.Step("connect", err)
		}
		defer g.release(hostKey(name))
		for _, s := range steps {
			if err := ctx.Err(); err != nil {
				return rollout.Step(s.name, err)
			}
			sctx, done := ctx, func() {}
			if s.finish {
				sctx, done = g.finishing(ctx, name)
			}
			stepStart := time.Now()
			g.events.Emit(events.Event{Type: events.Step, Host: name, Step: s.name, State: events.Started, Toplevel: b.Toplevel})
			sctx, closeLog, err := g.transcript(sctx, name, s.name)
			if err == nil {
				err = s.run(sctx, conn, h, b)
				closeLog()
			}
			done()
			ev := events.Event{Type: events.Step, Host: name, Step: s.name, State: events.Done, DurationMs: time.Since(stepStart).Milliseconds()}
			if err != nil {
				ev.State, ev.Error = events.Failed, err.Error()
			}
			g.events.Emit(ev)
			if err != nil {
				return rollout.Step(s.name, err)
			}
		}
		g.log.Debug(command+" finished", "host", name, "took", time.Since(start).Round(10*time.Millisecond).String())
		return nil
	})
	stopNotes()
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
		var se *rollout.StepError
		switch {
		case errors.As(r.Err, &skipped):
			outcomes[i].Skipped, outcomes[i].Error = true, skipped.Reason
			g.events.Emit(events.Event{Type: events.Step, Host: r.Host, State: events.Skipped, Error: skipped.Reason})
		case errors.Is(r.Err, context.Canceled) && !errors.As(r.Err, &se):
			outcomes[i].Skipped, outcomes[i].Error = true, "interrupted before it started"
			g.events.Emit(events.Event{Type: events.Step, Host: r.Host, State: events.Skipped, Error: outcomes[i].Error})
		case r.Err != nil:
			outcomes[i].Step, outcomes[i].Error = stepOf(r.Err)
		}
	}
	return outcomes, nil
}

// finishing is the context of a host's step that an interrupt (ctx) lets
// finish and a detach ends; done says it has finished.
func (g *globals) finishing(ctx context.Context, host string) (_ context.Context, done func()) {
	g.activatingMu.Lock()
	if g.activating == nil {
		g.activating = map[string]bool{}
	}
	g.activating[host] = true
	g.activatingMu.Unlock()
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(g.inv.Detach, cancel)
	return sctx, func() {
		stop()
		cancel()
		g.activatingMu.Lock()
		delete(g.activating, host)
		g.activatingMu.Unlock()
	}
}

// stillActivating names the hosts whose activation runs.
func (g *globals) stillActivating() []string {
	g.activatingMu.Lock()
	defer g.activatingMu.Unlock()
	hosts := slices.Collect(maps.Keys(g.activating))
	slices.Sort(hosts)
	return hosts
}

// noteInterrupts says, when ctx ends (the first Ctrl-C) and when the run
// is detached (the second), what becomes of the hosts under way.
func (g *globals) noteInterrupts(ctx context.Context) (stop func()) {
	stopInterrupt := context.AfterFunc(ctx, func() {
		if hosts := g.stillActivating(); len(hosts) > 0 {
			g.log.Warn(fmt.Sprintf("interrupted: no further host starts; waiting for %s to finish activating (Ctrl-C again to detach)", strings.Join(hosts, ", ")))
		}
	})
	stopDetach := context.AfterFunc(g.inv.Detach, func() {
		if hosts := g.stillActivating(); len(hosts) > 0 {
			g.log.Warn(fmt.Sprintf("detached: %s still activating on the host(s); each keeps its lock until its switch ends", strings.Join(hosts, ", ")))
		}
	})
	return func() { stopInterrupt(); stopDetach() }
}

// noRoot is the refusal of a step that needs root on a host whose login
// user has no way to become root.
func noRoot(step, user string) error {
	return fmt.Errorf("%s needs root on the host, and %s has no way to become root: "+
		"set deployment.privilegeEscalationCommand (it is empty) or deployment.targetUser = \"root\"", step, user)
}
