package cli

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/internal/hooks"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/rollout"
)

// loadHooks reads the hosts' deployment.hooks, so that a bad one stops
// the run before any host is touched.
func (g *globals) loadHooks(hosts []*inventory.Host) error {
	g.hooks = map[string]hooks.Hooks{}
	if g.noHooks {
		return nil
	}
	var errs []error
	for _, h := range hosts {
		hs, err := hooks.Parse(h.Extra["hooks"])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
		}
		g.hooks[h.Name] = hs
	}
	if len(errs) > 0 {
		return usageErrorf("%w", errors.Join(errs...))
	}
	return nil
}

// runHooks runs h's hooks at point: local ones here, target ones through
// t. Their output shows under -v; a failure's end is in its error.
func (g *globals) runHooks(ctx context.Context, h *inventory.Host, t hooks.Target, point string, env hooks.Env) error {
	hs := g.hooks[h.Name]
	if len(hs[point]) == 0 {
		return nil
	}
	env.Host, env.TargetHost = h.Name, h.TargetHost
	r := hooks.Runner{Env: g.inv.Env, Target: t, Log: g.log}
	if g.verbose {
		w := g.handler.Lines(h.Name)
		defer w.Close()
		r.Output = w
	}
	if err := r.Run(ctx, hs, point, env); err != nil {
		return err
	}
	g.log.Debug(point+" hooks done", "host", h.Name)
	return nil
}

// buildHooks wraps a plan's build in the hosts' preBuild and postBuild
// hooks: a host whose preBuild hook fails is not built, one whose
// postBuild hook fails goes no further.
func (g *globals) buildHooks(ctx context.Context, hosts []*inventory.Host, build func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error)) (map[string]built, error) {
	failed := map[string]error{}
	var mu sync.Mutex
	each := func(hosts []*inventory.Host, point string, env func(h *inventory.Host) hooks.Env) {
		rollout.Each(ctx, names(hosts), g.parallel, func(ctx context.Context, name string) error {
			h := byName(hosts, name)
			if len(g.hooks[name][point]) == 0 {
				return nil
			}
			t, done, err := g.hookTarget(ctx, h, point)
			if err == nil {
				hctx, closeLog := ctx, func() {}
				if t != nil {
					hctx, closeLog, err = g.transcript(ctx, name, point+" hook")
				}
				if err == nil {
					err = g.runHooks(hctx, h, t, point, env(h))
					closeLog()
				}
				done()
			}
			if err != nil {
				mu.Lock()
				failed[name] = rollout.Step(point+" hook", err)
				mu.Unlock()
			}
			return nil
		})
	}
	each(hosts, "preBuild", func(*inventory.Host) hooks.Env { return hooks.Env{} })
	var building []*inventory.Host
	for _, h := range hosts {
		if failed[h.Name] == nil {
			building = append(building, h)
		}
	}
	out := map[string]built{}
	if len(building) > 0 {
		var err error
		if out, err = build(ctx, building); err != nil {
			return nil, err
		}
	}
	var ok []*inventory.Host
	for _, h := range building {
		if out[h.Name].Err == nil {
			ok = append(ok, h)
		}
	}
	each(ok, "postBuild", func(h *inventory.Host) hooks.Env { return hooks.Env{Toplevel: out[h.Name].Toplevel} })
	for name, err := range failed {
		b := out[name]
		// A hook's failure is this host's to report, whatever its build did.
		b.Err, b.Reported = err, false
		out[name] = b
	}
	return out, nil
}

// hookTarget is the host's connection for a point's target hooks, when it
// has any; done lets go of it.
func (g *globals) hookTarget(ctx context.Context, h *inventory.Host, point string) (hooks.Target, func(), error) {
	if g.local != nil {
		return g.local, func() {}, nil
	}
	for _, hk := range g.hooks[h.Name][point] {
		if hk.On == "target" {
			conn, err := g.connect(ctx, hostKey(h.Name), targetOf(h))
			if err != nil {
				return nil, nil, fmt.Errorf("connect for the %s hooks: %w", point, err)
			}
			return conn, func() { g.release(hostKey(h.Name)) }, nil
		}
	}
	return nil, func() {}, nil
}

// postActivateChecks runs the postActivate hooks as checks: one failing
// rolls the host back.
func (g *globals) postActivateChecks(h *inventory.Host, action, toplevel string) func(ctx context.Context, t activate.Target, res *activate.Result) []activate.ProbeResult {
	if len(g.hooks[h.Name]["postActivate"]) == 0 {
		return nil
	}
	return func(ctx context.Context, t activate.Target, res *activate.Result) []activate.ProbeResult {
		r := activate.ProbeResult{Check: "postActivate hooks", OK: true, Attempts: 1}
		err := g.runHooks(ctx, h, t, "postActivate", hooks.Env{Toplevel: toplevel, Previous: res.Previous, Action: action})
		if err != nil {
			r.OK, r.Error = false, err.Error()
		}
		return []activate.ProbeResult{r}
	}
}

func names(hosts []*inventory.Host) []string {
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = h.Name
	}
	return out
}

func byName(hosts []*inventory.Host, name string) *inventory.Host {
	for _, h := range hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}
