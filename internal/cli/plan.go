package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deployctl/deployctl/activate"
	"github.com/deployctl/deployctl/build"
	"github.com/deployctl/deployctl/internal/inventory"
	"github.com/deployctl/deployctl/internal/nix"
	"github.com/deployctl/deployctl/internal/remote"
	"github.com/deployctl/deployctl/internal/rollout"
	"github.com/deployctl/deployctl/internal/serve"
	"github.com/deployctl/deployctl/push"
)

// plan is the hosts a command works on, and how their systems are had.
type plan struct {
	hosts []*inventory.Host
	// named are the host names given outright (not through a glob or tag).
	named []string
	// closures builds the hosts' systems from the flake, or checks that
	// the manifest's (or the --closure) paths exist. It runs after every
	// target is resolved and before any host is contacted, for the hosts
	// that are left by then.
	closures func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error)
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
	return &plan{hosts: inv.Selected, named: namedHosts(args), closures: func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
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
	return &plan{hosts: []*inventory.Host{h}, closures: func(ctx context.Context, _ []*inventory.Host) (map[string]built, error) {
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
	return &plan{hosts: selected, named: namedHosts(args), closures: func(ctx context.Context, hosts []*inventory.Host) (map[string]built, error) {
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
	s, err := serve.Open(ctx, conn, false)
	if err != nil {
		return fmt.Errorf("check the systems on %s: %w", p.target.Name, err)
	}
	defer s.Close()
	valid, err := s.QueryValidPaths(paths, false, false)
	if err != nil {
		return fmt.Errorf("check the systems on %s: %w", p.target.Name, err)
	}
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

// localTops returns the systems of closures that are in the local store.
func localTops(closures map[string]built) []string {
	var tops []string
	for _, b := range closures {
		if b.Err == nil && b.Toplevel != "" && b.At.local() {
			tops = append(tops, b.Toplevel)
		}
	}
	return tops
}

// holdRoots registers the local systems as GC roots until the run ends
// (nothing of them stays on this machine after), with one Nix call.
func (g *globals) holdRoots(ctx context.Context, closures map[string]built) error {
	return g.holdLocal(ctx, localTops(closures))
}

// holdLocal makes paths GC roots until the run ends, or fails, naming
// them, when any is missing from the local store. A path held already is
// not held again.
func (g *globals) holdLocal(ctx context.Context, paths []string) error {
	var todo []string
	for _, p := range paths {
		if !g.held[p] {
			todo = append(todo, p)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	dir, err := g.rootDir("hold")
	if err != nil {
		return err
	}
	if err := build.HoldRoots(ctx, g.nix(), dir, todo); err != nil {
		// Say which paths are missing, if that is what went wrong.
		if cerr := g.checkLocal(ctx, todo); cerr != nil {
			return cerr
		}
		return err
	}
	if g.held == nil {
		g.held = map[string]bool{}
	}
	for _, p := range todo {
		g.held[p] = true
	}
	return nil
}

// rootDir is a new directory for GC roots that last as long as the run.
func (g *globals) rootDir(name string) (string, error) {
	g.rootsMu.Lock()
	defer g.rootsMu.Unlock()
	if g.roots == "" {
		dir, err := os.MkdirTemp(g.getenv("TMPDIR"), "deployctl-roots-")
		if err != nil {
			return "", fmt.Errorf("gc roots: %w", err)
		}
		g.roots = dir
	}
	dir, err := os.MkdirTemp(g.roots, name+"-")
	if err != nil {
		return "", fmt.Errorf("gc roots: %w", err)
	}
	return dir, nil
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

// hostStep is one thing done to a host over its connection.
type hostStep struct {
	name string
	run  func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error
}

func (g *globals) pushStep() hostStep {
	return hostStep{"push", func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
		switch {
		case b.At.on == "target":
			g.log.Info("built on the target: nothing to push", "host", h.Name)
			return nil
		case g.copyBackend == "nix" && !b.At.local():
			return fmt.Errorf("--copy-backend nix pushes from the local store only, and this system is on %s", b.At.target.Name)
		case g.copyBackend == "nix":
			if err := push.NixCopy(ctx, g.nix(), conn.Endpoint(), g.sshConfig, b.Toplevel, push.Options{Substitute: g.substitute}); err != nil {
				return err
			}
			g.log.Info("pushed", "host", h.Name, "toplevel", b.Toplevel)
			return nil
		}
		var src push.Source = push.LocalStore{Nix: g.nix(), Shared: g.sharedNARs(), Infos: g.localInfos}
		if !b.At.local() {
			bc, err := g.connect(ctx, b.At.key, b.At.target)
			if err != nil {
				return fmt.Errorf("connect to build host %s: %w", b.At.target.Name, err)
			}
			defer g.release(b.At.key)
			src = push.Builder{Name: b.At.target.Name, Conn: bc}
		}
		start := time.Now()
		opts := push.Options{
			Substitute: g.substitute,
			Sign:       g.signer,
			OnSending: func(paths, of int, bytes int64) {
				g.log.Info(fmt.Sprintf("sending %d of %d paths, %s", paths, of, humanBytes(bytes)), "host", h.Name, "from", src.String())
				g.pushBar.expect(bytes)
			},
			OnSent: g.pushBar.sent,
		}
		st, err := push.Native(ctx, conn, src, b.Toplevel, opts)
		if err != nil {
			return err
		}
		took := time.Since(start)
		g.log.Info(fmt.Sprintf("pushed %d of %d paths, %s%s", st.Sent, st.Paths, humanBytes(st.Bytes), rate(st.Bytes, took)), "host", h.Name, "from", src.String(), "took", took.Round(10*time.Millisecond).String())
		return nil
	}}
}

// rate is ", N MiB/s" for n bytes in d, or "" when there is too little to
// say.
func rate(n int64, d time.Duration) string {
	if n < 1<<20 || d <= 0 {
		return ""
	}
	return ", " + humanBytes(int64(float64(n)/d.Seconds())) + "/s"
}

// humanBytes is n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 2; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMG"[exp])
}

func (g *globals) activateStep(action string) hostStep {
	return hostStep{"activate", func(ctx context.Context, conn *remote.Conn, h *inventory.Host, b built) error {
		out := activate.Options{Warn: func(msg string) { g.log.Warn(msg, "host", h.Name) }}
		if g.verbose {
			w := g.handler.Lines(h.Name)
			defer w.Close()
			out.Stdout, out.Stderr = w, w
		} else {
			out.Stdout = io.Discard
		}
		if err := activate.Activate(ctx, conn, b.Toplevel, action, out); err != nil {
			return err
		}
		g.log.Info(action+" done", "host", h.Name)
		return nil
	}}
}

// runHosts checks every selected host can be reached as configured, gets
// the systems, then runs steps on each host over one SSH connection, at
// most --parallel at once, and summarises.
func (g *globals) runHosts(ctx context.Context, command string, p *plan, steps ...hostStep) error {
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
		if err == nil && g.copyBackend == "nix" {
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
	// Hold every system as a GC root on this machine until the run ends,
	// so that a garbage collection meanwhile cannot take it.
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
	if err := g.holdRoots(ctx, closures); err != nil {
		return err
	}
	// The pushes' metadata: one nix path-info for every local system.
	if slices.ContainsFunc(steps, func(s hostStep) bool { return s.name == "push" }) && g.copyBackend != "nix" {
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
	results := rollout.Each(ctx, names, g.parallel, func(ctx context.Context, name string) error {
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
			g.log.Info(fmt.Sprintf("local store: serialised %s once (%s) and sent them to other hosts %s from memory", plural(st.Serialised, "path"), humanBytes(st.Bytes), plural(st.Reused, "time")))
		}
	}
	outcomes := make([]hostOutcome, len(results))
	for i, r := range results {
		outcomes[i] = hostOutcome{Host: r.Host, Toplevel: closures[r.Host].Toplevel, Duration: r.Duration, OK: r.Err == nil}
		if r.Err != nil {
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
