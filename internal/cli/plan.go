package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/internal/serve"
)

// plan is the hosts a command works on, and how their systems are had.
type plan struct {
	hosts []*inventory.Host
	// named are the host names given outright (not through a glob or tag).
	named []string
	// closures builds the hosts' systems from the flake, or checks that
	// the manifest's (or the --closure) paths exist. It runs after every
	// target is resolved and before any host is contacted, for the hosts
	// that are left by then (or, when present says yes to every one of
	// them, while it runs).
	closures func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error)
	// present, when set, says a host's system is already in this
	// machine's store, as far as a glance can tell.
	present func(host string) bool
	// builds says closures builds the systems (from the flake), so the
	// build hooks run around it; fleet is then every host of the flake
	// (where a buildHost may be).
	builds bool
	fleet  []*inventory.Host
}

// source says where a command's systems come from.
type source struct {
	manifest string // --manifest FILE: no evaluation at all
	closure  string // --closure PATH: one prebuilt system, one host, no flake
}

func (s *source) register(f interface {
	StringVar(*string, string, string, string)
}, closure bool) {
	f.StringVar(&s.manifest, "manifest", "", "take the systems from the build manifest `FILE` (deployctl build --manifest-out) instead of evaluating the flake")
	if closure {
		f.StringVar(&s.closure, "closure", "", "deploy the prebuilt system `PATH` (in /nix/store) to the one host named, without a flake")
	}
}

func (g *globals) plan(ctx context.Context, args []string, sel selection, src source) (*plan, error) {
	switch {
	case src.closure != "" && (src.manifest != "" || sel.all || len(args) != 1):
		return nil, usageErrorf("--closure takes exactly one host name, and no --manifest or --all")
	case src.closure != "":
		return g.planClosure(args[0], src.closure)
	case src.manifest != "":
		return g.planManifest(args, sel, src.manifest)
	}
	inv, err := g.load(ctx, args, sel, true, g.evalChunk == 0)
	if err != nil {
		return nil, err
	}
	return &plan{hosts: inv.Selected, named: namedHosts(args), builds: true, fleet: inv.Hosts, closures: func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
		return g.evalAndBuild(ctx, inv, hosts)
	}}, nil
}

func (g *globals) planClosure(host, closure string) (*plan, error) {
	if !strings.HasPrefix(closure, "/nix/store/") {
		return nil, usageErrorf("--closure %s: not a /nix/store path", closure)
	}
	sels, err := inventory.ParseSelectors([]string{host})
	if err != nil || !sels[0].Literal || sels[0].Tag {
		return nil, usageErrorf("--closure: %q is not a host name", host)
	}
	h, err := inventory.Decode(host, nil)
	if err != nil {
		return nil, usageError{err}
	}
	return &plan{hosts: []*inventory.Host{h}, present: func(string) bool { return inLocalStore(closure) }, closures: func(ctx context.Context, _ []*inventory.Host) (map[string]built, error) {
		if err := g.holdLocal(ctx, []string{closure}); err != nil {
			return nil, err
		}
		if _, err := os.Stat(closure + "/bin/switch-to-configuration"); err != nil {
			return nil, fmt.Errorf("--closure %s is not a NixOS system: it has no bin/switch-to-configuration", closure)
		}
		return map[string]built{host: {Toplevel: closure, At: placement{on: "local"}}}, nil
	}}, nil
}

func (g *globals) planManifest(args []string, sel selection, path string) (*plan, error) {
	if !sel.all && len(args) == 0 {
		return nil, usageErrorf("no hosts selected: name hosts, globs (web-*) or tags (@db), or pass --all")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, usageError{err}
	}
	defer f.Close()
	m, err := build.ReadManifest(f)
	if err != nil {
		return nil, usageErrorf("%s: %w", path, err)
	}
	var hosts []*inventory.Host
	var errs []error
	for _, name := range m.Names() {
		h, err := inventory.Decode(name, m.Hosts[name].Deployment)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hosts = append(hosts, h)
	}
	if len(errs) > 0 {
		return nil, usageErrorf("%s: %w", path, errors.Join(errs...))
	}
	sels, err := inventory.ParseSelectors(args)
	if err != nil {
		return nil, usageError{err}
	}
	selected, err := inventory.Select(hosts, sels, sel.all, true)
	if err != nil {
		return nil, usageErrorf("%s: %w", path, err)
	}
	present := func(name string) bool {
		mh := m.Hosts[name]
		return mh.Error == "" && (mh.BuiltOn == "" || mh.BuiltOn == "local") && inLocalStore(mh.Toplevel)
	}
	return &plan{hosts: selected, named: namedHosts(args), present: present, closures: func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
		out := map[string]built{}
		var local []string
		elsewhere := map[string][]string{} // placement key → toplevels
		places := map[string]placement{}
		for _, h := range hosts {
			mh := m.Hosts[h.Name]
			var at placement
			switch mh.BuiltOn {
			case "", "local":
				at = placement{on: "local"}
			case "target":
				at = placement{on: "target", key: hostKey(h.Name), target: targetOf(h)}
			default:
				b, ok := m.Builders[mh.BuiltOn]
				if !ok {
					return nil, usageErrorf("%s: %s was built on %s, which the manifest's builders do not list", path, h.Name, mh.BuiltOn)
				}
				at = placement{on: mh.BuiltOn, key: builderKey(mh.BuiltOn), target: builderOf(mh.BuiltOn, b)}
				g.pin(at.key)
			}
			switch {
			case mh.Error != "":
				step := mh.Step
				if step == "" {
					step = "build"
				}
				out[h.Name] = built{Err: rollout.Step(step, fmt.Errorf("in the manifest: %s", mh.Error))}
			case at.local():
				out[h.Name] = built{Toplevel: mh.Toplevel, At: at}
				local = append(local, mh.Toplevel)
			default:
				out[h.Name] = built{Toplevel: mh.Toplevel, At: at}
				places[at.key] = at
				elsewhere[at.key] = append(elsewhere[at.key], mh.Toplevel)
			}
		}
		if err := g.holdLocal(ctx, local); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for k, tops := range elsewhere {
			if err := g.checkRemote(ctx, places[k], tops); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
		return out, nil
	}}, nil
}

// inLocalStore says path is in this machine's /nix/store, at a glance (a
// path can be there and not valid, so nix-store --realise makes sure).
func inLocalStore(path string) bool {
	_, err := os.Lstat(path)
	return strings.HasPrefix(path, "/nix/store/") && err == nil
}

// checkRemote fails, naming them, when any of paths is missing from the
// store of the machine p says holds them.
func (g *globals) checkRemote(ctx context.Context, p placement, paths []string) error {
	d, err := g.dialer()
	if err != nil {
		return err
	}
	if _, err := d.Resolve(p.target); err != nil {
		return usageErrorf("build host %s: %w", p.target.Name, err)
	}
	conn, err := g.connect(ctx, p.key, p.target)
	if err != nil {
		return fmt.Errorf("check the systems on %s: %w", p.target.Name, err)
	}
	defer g.release(p.key)
	s, valid, err := serve.OpenQuery(ctx, conn, false, paths, false, false)
	if err != nil {
		return fmt.Errorf("check the systems on %s: %w", p.target.Name, err)
	}
	defer s.Close()
	var missing []string
	for _, path := range paths {
		if !slices.Contains(valid, path) {
			missing = append(missing, path)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("not in the store of %s (garbage-collected? build again): %s", p.target.Name, strings.Join(missing, " "))
	}
	return nil
}

// namedHosts returns the selectors that name a host outright.
func namedHosts(args []string) []string {
	sels, _ := inventory.ParseSelectors(args)
	var out []string
	for _, s := range sels {
		if s.Literal && !s.Tag {
			out = append(out, s.Raw)
		}
	}
	return out
}

// checkLocal fails, naming them, when any of paths is missing from the
// local store.
func (g *globals) checkLocal(ctx context.Context, paths []string) error {
	missing, err := build.Missing(ctx, g.nix(), paths)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("not in the local store (garbage-collected? build again, or keep them with GC roots): %s", strings.Join(missing, " "))
	}
	return nil
}
