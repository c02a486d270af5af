package cli

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/rollout"
)

// runLocal is deploy --local: one host, this machine. Its system is built
// here and activated here, with no SSH and no push, through the same
// activation as any host (lock, dead-man's switch, checks, rollback).
func runLocal(ctx context.Context, g *globals, opts deployOptions, args []string) error {
	switch {
	case opts.closure != "" || opts.all:
		return usageErrorf("--local deploys one host, this machine: no --closure or --all")
	case g.buildOnTarget || g.buildHost != "":
		return usageErrorf("--local builds here: no --build-on-target or --build-host")
	case g.copyFlake:
		return usageErrorf("--local deploys this machine, which has the flake: no --copy-flake")
	case g.askSudoPassword:
		return usageErrorf("--local: sudo asks for its password on this terminal itself: no --ask-sudo-password")
	case len(args) > 1:
		return usageErrorf("--local deploys one host, this machine: name at most one")
	}
	if len(args) == 0 {
		name, err := os.Hostname()
		if err != nil {
			return usageErrorf("--local: name the host this machine is (its host name is unknown: %v)", err)
		}
		args = []string{strings.SplitN(name, ".", 2)[0]}
	}
	p, err := g.plan(ctx, args, opts.selection, opts.source)
	if err != nil {
		return err
	}
	if len(p.hosts) != 1 {
		return usageErrorf("--local: %q selects %d hosts; name the one this machine is", args[0], len(p.hosts))
	}
	h := p.hosts[0]
	if !h.AllowLocalDeployment {
		return usageErrorf("%s: deployment.allowLocalDeployment is not true: set it to deploy this machine with --local", h.Name)
	}
	specs, err := activationSpecs(p.hosts)
	if err != nil {
		return err
	}
	h.BuildOnTarget, h.BuildHost = false, ""
	if err := g.loadHooks(p.hosts); err != nil {
		return err
	}
	local := &remote.Local{Escalation: h.PrivilegeEscalationCommand, Log: g.log, Env: g.inv.Env}
	g.local = local
	closures, err := g.buildHooks(ctx, p.hosts, p.closures)
	if err != nil {
		return err
	}
	b := closures[h.Name]
	outcome := hostOutcome{Host: h.Name, Toplevel: b.Toplevel}
	if b.Err == nil {
		err = g.holdRoots(ctx, closures)
		if err != nil {
			return err
		}
		// The dead-man's switch checks in by running a command again: it
		// rolls back a switch whose deployctl died (say, with the SSH
		// session it ran in).
		again := func(context.Context) (activate.Target, error) { return local, nil }
		start := time.Now()
		sctx, done := g.finishing(ctx, h.Name)
		sctx, closeLog, err := g.transcript(sctx, h.Name, "activate")
		if err == nil {
			b.Err = g.activateOn(sctx, local, "localhost", again, h, b, opts.activation, specs[h.Name])
			closeLog()
		} else {
			b.Err = rollout.Step("activate", err)
		}
		done()
		outcome.Duration = time.Since(start)
	}
	outcome.OK = b.Err == nil
	if b.Err != nil {
		outcome.Step, outcome.Error = stepOf(b.Err)
		if outcome.Step == "" {
			outcome.Step = "activate"
		}
	}
	if ctx.Err() != nil {
		_ = g.summarize("deploy --local (interrupted)", []hostOutcome{outcome})
		return ctx.Err()
	}
	return g.summarize("deploy --local", []hostOutcome{outcome})
}
